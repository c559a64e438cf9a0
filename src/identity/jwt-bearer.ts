import {
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { LRUCache } from 'lru-cache';
import { JWT_ALGORITHMS, type TrustedIssuerConfig } from '../config/schema.js';
import { AuthError, ForbiddenError, HttpError } from '../errors.js';
import type { KeyControls } from '../keys/controls.js';
import { readGroups } from '../policy/groups.js';
import type { FailedAuthLimiter } from './failure-limiter.js';
import type { CallerRequest, CredentialLoader, Identity } from './identify.js';

/** The scopes a trusted issuer may grant (config/schema.ts keeps `keys` and `admin` for people). */
type MachineScope = NonNullable<TrustedIssuerConfig['scopes']>[number];

/** RFC 7519 7.2: three base64url parts; the signature part is empty for `alg: none`, refused below. */
const JWT_BEARER = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*) *$/i;

/** Clocks differ a little between an issuer and the gateway; a minute is the common allowance. */
const LEEWAY_SECONDS = 60;
/** jose refetches a JWKS for an unknown `kid` at most this often, so forged kids cannot make it hammer the issuer. */
const JWKS_REFETCH_COOLDOWN_MS = 30_000;
const JWKS_MAX_AGE_MS = 10 * 60_000;
const FETCH_TIMEOUT_MS = 5_000;
/** Verified tokens remembered, and the most characters of token they may hold together (memory stays bounded). */
const DEFAULT_CACHE_ENTRIES = 10_000;
const CACHE_MAX_CHARACTERS = 16 * 1024 * 1024;
/** What may appear in X-Forwarded-User: printable ASCII, bounded, so no header can be split or bloated. */
const SUBJECT = /^[\x21-\x7e]{1,256}$/;

/** What a request from a trusted issuer's token is, beside the identity every loader returns. */
export interface ServiceIdentity {
  /** The configured `name`. */
  name: string;
  /** The token's `iss`, passed to the platform as X-Forwarded-Client. */
  issuer: string;
  subject: string;
}

export interface JwtBearerOptions {
  issuers: readonly TrustedIssuerConfig[];
  /** API keys start with it; such a bearer is never read as a JWT. */
  apiKeyPrefix: string;
  limiter: FailedAuthLimiter;
  /** A token verified for the first time (not a cache hit): for the audit log. */
  onSignIn?(request: CallerRequest, identity: Identity, claims: JWTPayload): void;
  cacheEntries?: number;
  /** How soon an unknown `kid` may make an issuer's keys be fetched again; default 30 s. */
  refetchCooldownMs?: number;
}

/** The identity every request from this service gets: `service:<name>/<subject>`. */
export function serviceIdOf(name: string, subject: string): string {
  return `service:${name}/${subject}`;
}

/**
 * A glob as `allowed_subjects` and `allowed_claims` write it: `*` is any run of characters except
 * `/` and `:` (one path or subject segment), `**` any run at all; everything else is literal.
 */
export function globMatcher(globs: readonly string[]): (value: string) => boolean {
  const patterns = globs.map(
    (glob) =>
      new RegExp(
        `^${glob
          .split(/(\*\*|\*)/)
          .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/:]*' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
          .join('')}$`,
        's',
      ),
  );
  return (value) => patterns.some((pattern) => pattern.test(value));
}

interface Issuer {
  config: TrustedIssuerConfig;
  algorithms: string[];
  keys: JWTVerifyGetKey;
  subjectAllowed?: (subject: string) => boolean;
  claimRules: { claim: string; allowed: (value: string) => boolean }[];
}

/**
 * `Authorization: Bearer <JWT>` from an issuer in `auth.trusted_issuers` (RFC 9068 access tokens,
 * Kubernetes service-account tokens, CI tokens). Returns undefined for any other Authorization
 * header (an API key), so the API-key loader after it judges that. The token's own `iss` picks the
 * one issuer whose keys may verify it; an `iss` not configured is refused before any network call.
 */
export function jwtBearerLoader(options: JwtBearerOptions): CredentialLoader {
  const cooldown = options.refetchCooldownMs ?? JWKS_REFETCH_COOLDOWN_MS;
  const issuers = new Map(options.issuers.map((config) => [config.issuer, compileIssuer(config, cooldown)]));
  // Keyed by the token itself: hashing it on every request cost more than the whole lookup.
  const verified = new LRUCache<string, Identity>({
    max: options.cacheEntries ?? DEFAULT_CACHE_ENTRIES,
    maxSize: CACHE_MAX_CHARACTERS,
    sizeCalculation: (_identity, token) => token.length,
  });
  const { limiter, apiKeyPrefix } = options;

  function verify(request: CallerRequest, token: string): Promise<Identity> {
    return limiter.guard(request.ip, async () => {
      const cached = verified.get(token);
      if (cached) return (request.identity = cached);
      const { identity, claims, expiresAt } = await verifyToken(issuers, token);
      verified.set(token, identity, { ttl: Math.max(1, expiresAt - Date.now()) });
      request.identity = identity;
      options.onSignIn?.(request, identity, claims);
      return identity;
    });
  }

  return {
    load(request) {
      const authorization = request.headers.authorization;
      if (authorization === undefined) return undefined;
      const token = JWT_BEARER.exec(authorization)?.[1];
      if (!token || token.startsWith(apiKeyPrefix)) return undefined;
      return verify(request, token);
    },
  };
}

function compileIssuer(config: TrustedIssuerConfig, cooldown: number): Issuer {
  const fetchKeys = (url: string) =>
    createRemoteJWKSet(new URL(url), {
      cooldownDuration: cooldown,
      cacheMaxAge: JWKS_MAX_AGE_MS,
      timeoutDuration: FETCH_TIMEOUT_MS,
    });
  return {
    config,
    algorithms: config.algorithms ?? [...JWT_ALGORITHMS],
    keys: config.jwks_uri ? fetchKeys(config.jwks_uri) : discoveredKeys(config.issuer, fetchKeys, cooldown),
    subjectAllowed: config.allowed_subjects && globMatcher(config.allowed_subjects),
    claimRules: Object.entries(config.allowed_claims ?? {}).map(([claim, globs]) => ({
      claim,
      allowed: globMatcher(globs),
    })),
  };
}

/**
 * The JWKS named by `<issuer>/.well-known/openid-configuration`, read on first use. A failed read
 * is retried only after the refetch cooldown, so an unreachable issuer is not asked on every request.
 * https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig
 */
function discoveredKeys(
  issuer: string,
  fetchKeys: (url: string) => JWTVerifyGetKey,
  cooldown: number,
): JWTVerifyGetKey {
  let keys: Promise<JWTVerifyGetKey> | undefined;
  let failedAt = 0;
  const discover = async (): Promise<JWTVerifyGetKey> => {
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS), redirect: 'error' });
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    const metadata = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
    // Discovery 4.3: the document must name the issuer it was fetched for.
    if (metadata.issuer !== issuer) throw new Error(`${url} names the issuer ${String(metadata.issuer)}`);
    if (typeof metadata.jwks_uri !== 'string') throw new Error(`${url} has no jwks_uri`);
    return fetchKeys(metadata.jwks_uri);
  };
  return async (header, token) => {
    if (!keys) {
      if (Date.now() - failedAt < cooldown) throw new errors.JWKSTimeout('discovery failed recently');
      keys = discover().catch((error: unknown) => {
        keys = undefined;
        failedAt = Date.now();
        throw error;
      });
    }
    return (await keys)(header, token);
  };
}

async function verifyToken(
  issuers: ReadonlyMap<string, Issuer>,
  token: string,
): Promise<{ identity: Identity; claims: JWTPayload; expiresAt: number }> {
  let alg: string | undefined;
  let iss: string | undefined;
  try {
    alg = decodeProtectedHeader(token).alg;
    iss = decodeJwt(token).iss;
  } catch (cause) {
    throw new AuthError('invalid_token', 'The bearer token is not a readable JWT; send an API key or a JWT.', {
      cause,
    });
  }
  const issuer = iss === undefined ? undefined : issuers.get(iss);
  if (!issuer) {
    throw new AuthError(
      'untrusted_issuer',
      `The bearer token's issuer ${JSON.stringify(iss ?? null).slice(0, 200)} is not in auth.trusted_issuers; ask the gateway's operator to trust it, or send an API key.`,
    );
  }
  if (alg === undefined || !issuer.algorithms.includes(alg)) {
    throw new AuthError(
      'token_algorithm_refused',
      `Tokens signed with ${JSON.stringify(alg ?? null)} are refused; ${issuer.config.name} tokens must use ${issuer.algorithms.join(', ')}.`,
    );
  }
  let claims: JWTPayload;
  try {
    ({ payload: claims } = await jwtVerify(token, issuer.keys, {
      issuer: issuer.config.issuer,
      audience: issuer.config.audience,
      algorithms: issuer.algorithms,
      clockTolerance: LEEWAY_SECONDS,
      requiredClaims: ['exp'],
    }));
  } catch (error) {
    throw refusalOf(error, issuer.config);
  }
  // jose checks `iat` only against a maximum age; a token issued in the future is as suspect as one not yet valid.
  if (typeof claims.iat === 'number' && claims.iat > Date.now() / 1000 + LEEWAY_SECONDS) {
    throw new AuthError('token_not_yet_valid', 'The bearer token was issued in the future; check the issuer’s clock.');
  }
  return { identity: identityOf(issuer, claims), claims, expiresAt: (claims.exp ?? 0) * 1000 };
}

/** jose's failures as answers the caller can act on; an unreachable issuer is the gateway's problem, not theirs. */
function refusalOf(error: unknown, config: TrustedIssuerConfig): HttpError {
  const options = { cause: error };
  if (error instanceof errors.JWTExpired) {
    return new AuthError('token_expired', 'The bearer token has expired; get a new one from its issuer.', options);
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === 'nbf') {
      return new AuthError(
        'token_not_yet_valid',
        'The bearer token is not valid yet (nbf); check the clocks.',
        options,
      );
    }
    if (error.claim === 'aud') {
      return new AuthError(
        'token_wrong_audience',
        `The bearer token is not for this gateway: its aud must contain ${JSON.stringify(config.audience)}.`,
        options,
      );
    }
    return new AuthError('invalid_token', `The bearer token's "${error.claim}" claim is not acceptable.`, options);
  }
  if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) {
    return new AuthError(
      'token_key_unknown',
      `The bearer token was signed with a key ${config.name} does not publish (kid unknown even after refetching its keys).`,
      options,
    );
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return new AuthError('token_signature_invalid', 'The bearer token’s signature does not verify.', options);
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return new AuthError('token_algorithm_refused', 'The bearer token is signed with a refused algorithm.', options);
  }
  if (
    error instanceof errors.JOSEError &&
    !(error instanceof errors.JWKSTimeout) &&
    !(error instanceof errors.JWKSInvalid)
  ) {
    return new AuthError('invalid_token', 'The bearer token is not a valid JWT from its issuer.', options);
  }
  return new HttpError(
    503,
    'issuer_unreachable',
    `The keys of the trusted issuer ${config.name} cannot be read right now; retry shortly.`,
    { ...options, headers: { 'retry-after': '5' } },
  );
}

function identityOf(issuer: Issuer, claims: JWTPayload): Identity {
  const { config } = issuer;
  const subjectClaim = config.subject_claim ?? 'sub';
  const [subject] = readGroups(claims, subjectClaim).groups;
  if (subject === undefined || !SUBJECT.test(subject)) {
    throw new AuthError(
      'token_subject_invalid',
      `The bearer token's "${subjectClaim}" claim must be 1 to 256 printable ASCII characters.`,
    );
  }
  if (issuer.subjectAllowed && !issuer.subjectAllowed(subject)) {
    throw new ForbiddenError(
      'subject_not_allowed',
      `The subject ${subject} is not in ${config.name}'s allowed_subjects.`,
    );
  }
  for (const rule of issuer.claimRules) {
    const values = readGroups(claims, rule.claim).groups;
    if (values.length !== 1 || !rule.allowed(values[0] ?? '')) {
      throw new ForbiddenError(
        'claim_not_allowed',
        `The bearer token's "${rule.claim}" claim is not allowed by ${config.name}'s allowed_claims.`,
      );
    }
  }
  const id = serviceIdOf(config.name, subject);
  const controls: KeyControls = {
    scopes: scopesOf(config, claims),
    models: config.models ?? null,
    requests_per_minute: config.requests_per_minute ?? null,
    tokens_per_minute: config.tokens_per_minute ?? null,
  };
  return {
    user: {
      id,
      issuer: config.issuer,
      subject: id,
      email: null,
      name: config.name,
      role: 'user',
      groups: [],
      disabled: false,
    },
    method: 'jwt_bearer',
    // Limits and usage are counted per service as per key; a JWT's end is its `exp`, enforced here.
    key: { id, controls, expires_at: null },
    service: { name: config.name, issuer: config.issuer, subject },
  };
}

/**
 * Fixed `scopes`, the `scope_claim`'s values (mapped by `scope_map`, else taken where they name a
 * Gatehouse scope), or with both the claim's values that the fixed list holds (`all` holds them all).
 */
function scopesOf(config: TrustedIssuerConfig, claims: JWTPayload): MachineScope[] {
  if (!config.scope_claim) return config.scopes ?? [];
  const named = readGroups(claims, config.scope_claim).groups.flatMap((value) => value.split(/\s+/));
  const fromClaim = named.flatMap((value): MachineScope[] => {
    const map = config.scope_map;
    const mapped = map ? (Object.hasOwn(map, value) ? map[value] : undefined) : value;
    return mapped === 'inference' || mapped === 'training' || mapped === 'read' || mapped === 'all' ? [mapped] : [];
  });
  const fixed = config.scopes;
  const held = fixed ? fromClaim.filter((scope) => fixed.includes(scope) || fixed.includes('all')) : fromClaim;
  return [...new Set(held)];
}
