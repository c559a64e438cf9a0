import { ForbiddenError, HttpError } from '../errors.js';
import type { CallerRequest, Identifier, Identity } from '../identity/identify.js';
import { DEFAULT_CONTROLS, effectiveLimit, missingScope, type ControlCaps, type ScopeRules } from '../keys/controls.js';
import type { Limits, RateLimiter } from '../limits/rate-limiter.js';
import { classifyTarget, strictPath, type PathRules } from './access.js';
import { assertSameOrigin } from './same-origin.js';

/**
 * What a request asks for: the platform (judged on its path), any signed-in caller, its owner's
 * keys (`keys` grant), the admin API (`admin` grant), or SCIM provisioning (`scim` grant, keys only).
 */
export type Need = 'platform' | 'signed_in' | 'keys' | 'admin' | 'scim';

/** What is known about a request before its body is read. */
export interface RequestFacts {
  /** Where the credentials are read from: headers, cookies, and the client address for the failed-auth limit. */
  credentials: CallerRequest;
  /** Undefined when a forward-auth proxy did not name it: scoped keys are then refused, as the target. */
  method: string | undefined;
  /** The request target as sent (path and query); for `platform`, undefined when a proxy did not name it. */
  target: string | undefined;
  need: Need;
  /**
   * False when the target was named by someone who could name any (a forward-auth caller that is
   * not a trusted proxy): it may then make the answer stricter (an admin path), never looser (a public one).
   */
  targetTrusted?: boolean;
  /** True where the gateway never sees the body (forward-auth), so models and tokens cannot be checked. */
  bodyUnseen?: boolean;
}

/** Who the platform is told the request is from, as the X-Forwarded-* identity headers carry it. */
export interface ForwardedIdentity {
  user: string;
  email?: string;
  keyId?: string;
  /** The trusted issuer of a machine's JWT (X-Forwarded-Client). */
  client?: string;
  groups: readonly string[];
}

export interface Allow {
  outcome: 'allow';
  /** Undefined on a public path. */
  identity: Identity | undefined;
  /** The decoded, normalised path the rules judged. */
  path: string;
  forwarded: ForwardedIdentity | undefined;
  /** For the caller's answer: OpenAI's x-ratelimit-* headers, an expiry warning. */
  headers: Record<string, string> | undefined;
  /** What the exchange is charged to once the platform reports its tokens; undefined when nothing is limited. */
  limits: Limits | undefined;
}

export type Decision =
  | Allow
  /** No credential at all: a browser is sent to sign in, a program gets a 401. */
  | { outcome: 'challenge' }
  | { outcome: 'deny'; error: HttpError };

export interface DecideOptions {
  identifier: Identifier;
  /** `gateway.public_paths` and `gateway.admin_paths`. */
  pathRules: PathRules;
  scopeRules: ScopeRules;
  websiteOrigin: string;
  limiter: RateLimiter;
  defaults: {
    keyRequestsPerMinute: number;
    keyTokensPerMinute: number;
    userRequestsPerMinute: number;
    userTokensPerMinute: number;
  };
  caps: ControlCaps;
  /** `gateway.forward_auth_skip_body_controls`: let keys with body controls through where the body is unseen. */
  skipUnseenBodyControls: boolean;
}

export type Decide = (facts: RequestFacts) => Promise<Decision>;

const EXPIRY_WARNING_MS = 7 * 86_400_000;
const CHALLENGE: Decision = { outcome: 'challenge' };

/**
 * The one access decision every surface asks (the platform proxy, forward-auth, the gateway's own
 * API and pages): who the caller is, and whether they may do this. Refusals come back as values
 * carrying the error to answer with; only a failing dependency (the database) throws.
 */
export function createDecide(options: DecideOptions): Decide {
  const { identifier, pathRules, scopeRules, websiteOrigin, limiter, defaults, caps } = options;

  // One async function, the try included: on the API-key path every extra promise shows in the CPU per request.
  return async function decide(facts: RequestFacts): Promise<Decision> {
    try {
      const { credentials, method, target, need } = facts;
      let path = '/';
      let adminPath = false;
      if (need === 'platform' && target !== undefined) {
        const classified = classifyTarget(target, pathRules);
        path = classified.path;
        if (classified.access === 'public' && facts.targetTrusted !== false) {
          return {
            outcome: 'allow',
            identity: undefined,
            path,
            forwarded: undefined,
            headers: undefined,
            limits: undefined,
          };
        }
        adminPath = classified.access === 'admin';
      }
      const identity = await identifier.identify(credentials);
      if (!identity) return CHALLENGE;
      const { user, key } = identity;
      if (identity.method === 'session' && method !== undefined) {
        assertSameOrigin(method, credentials.headers, websiteOrigin);
      }
      if (need === 'keys') assertGrant(identity, 'keys');
      if (need === 'admin') {
        if (user.role !== 'admin')
          throw new ForbiddenError('admin_required', 'Only administrators may use the admin API.');
        assertGrant(identity, 'admin');
      }
      if (need === 'scim') {
        // Provisioning can disable every account: only an administrator's key made for it, never a browser.
        if (!key || user.role !== 'admin' || !key.controls.scopes.includes('scim')) {
          throw new ForbiddenError(
            'scim_scope_required',
            'SCIM takes scim.token, or an API key with the "scim" scope that belongs to an administrator.',
          );
        }
      }
      if (need !== 'platform') return allow(identity, path, undefined, undefined);

      if (adminPath && user.role !== 'admin') {
        throw new ForbiddenError('admin_required', 'This path is for administrators only.');
      }
      const controls = key?.controls ?? DEFAULT_CONTROLS;
      if (!controls.scopes.includes('all')) {
        if (target === undefined || method === undefined) {
          throw new ForbiddenError(
            'target_unknown',
            'This API key has limited scopes, so the proxy must name the request with X-Forwarded-Method and X-Forwarded-Uri.',
          );
        }
        // A scoped key is judged on the normalised path, so `/v1/train/../chat` cannot pass as training.
        const judged = strictPath(target);
        const needed = missingScope(controls.scopes, method, judged, scopeRules);
        if (needed) {
          throw new ForbiddenError(
            'insufficient_scope',
            `This API key lacks the "${needed}" scope needed for ${method} ${judged}.`,
          );
        }
      }
      const limits: Limits = {
        keyId: key?.id ?? `session:${user.id}`,
        userId: user.id,
        keyRequests: key
          ? effectiveLimit(controls.requests_per_minute, defaults.keyRequestsPerMinute, caps.maxRequestsPerMinute)
          : 0,
        keyTokens: key
          ? effectiveLimit(controls.tokens_per_minute, defaults.keyTokensPerMinute, caps.maxTokensPerMinute)
          : 0,
        userRequests: defaults.userRequestsPerMinute,
        userTokens: defaults.userTokensPerMinute,
      };
      if (facts.bodyUnseen && !options.skipUnseenBodyControls) assertNoBodyControls(identity, controls.models, limits);
      const limited = limiter.applies(limits);
      let headers = limited ? await limiter.admit(limits) : undefined;
      const expiresAt = key?.expires_at;
      if (expiresAt !== null && expiresAt !== undefined && expiresAt - Date.now() < EXPIRY_WARNING_MS) {
        headers = {
          ...headers,
          'x-warning': `This API key expires on ${new Date(expiresAt).toISOString()}; create a new one at /v1/auth/account.`,
        };
      }
      return allow(identity, path, headers, limited ? limits : undefined);
    } catch (error) {
      // Refusals (a wrong key, a limit, a scope) are answers; anything else is a failure to decide.
      if (error instanceof HttpError) return { outcome: 'deny', error };
      throw error;
    }
  };
}

function allow(
  identity: Identity,
  path: string,
  headers: Record<string, string> | undefined,
  limits: Limits | undefined,
): Allow {
  const { user, key, service } = identity;
  return {
    outcome: 'allow',
    identity,
    path,
    // A machine is named by its service identity and issuer; it has no key id to pass on.
    forwarded: service
      ? { user: user.subject, client: service.issuer, groups: user.groups }
      : { user: user.subject, email: user.email ?? undefined, keyId: key?.id, groups: user.groups },
    headers,
    limits,
  };
}

/**
 * Managing keys and administering are grants of their own: a session holds both (`admin` only for
 * administrators, checked by the caller), an API key only the ones its scopes name.
 */
function assertGrant(identity: Identity, grant: 'keys' | 'admin'): void {
  if (!identity.key || identity.key.controls.scopes.includes(grant)) return;
  throw new ForbiddenError(
    'insufficient_scope',
    grant === 'keys'
      ? 'This API key lacks the "keys" scope needed to manage API keys; sign in at /v1/auth/account, or use a key made with it.'
      : 'This API key lacks the "admin" scope needed for the admin API.',
  );
}

/**
 * Where the body is never seen (forward-auth), a model allow-list or a token limit cannot be
 * enforced; passing such a request would quietly drop the control, so it is refused unless the
 * operator chose otherwise.
 */
function assertNoBodyControls(identity: Identity, models: readonly string[] | null, limits: Limits): void {
  const reason = models
    ? 'a model allow-list'
    : limits.keyTokens > 0 || limits.userTokens > 0
      ? 'a token limit'
      : undefined;
  if (!reason) return;
  throw new ForbiddenError(
    'body_controls_unenforceable',
    `${identity.key ? 'This API key' : 'Your account'} has ${reason}, which forward-auth cannot enforce because it never sees the request body; send the request through Gatehouse's own proxy, or use a key without it.`,
  );
}
