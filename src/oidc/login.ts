import { LRUCache } from 'lru-cache';
import * as client from 'openid-client';
import { AuthError } from '../errors.js';
import { growingCapacity } from '../storage/capacity.js';
import { randomToken, sha256 } from '../crypto/tokens.js';
import type { SessionTokens } from '../sessions/store.js';
import type { Db } from '../storage/database.js';
import type { ConnectedProvider } from './providers.js';

/** Long enough to type a password and pass a second factor; short enough that a stolen flow cookie expires. */
const LOGIN_FLOW_TTL_MS = 10 * 60_000;
/** The same leeway openid-client allows for `exp`. */
const CLOCK_TOLERANCE_MS = 30_000;

/**
 * Sign-ins one client address may have pending at once. Each `/v1/auth/login` stores a row, and
 * the endpoint needs no credentials; past this, the address's oldest pending sign-in is dropped
 * (its person sees "sign-in expired, try again"). High enough for an office behind one NAT.
 */
export const MAX_PENDING_LOGINS_PER_ADDRESS = 100;

export interface LoginStart {
  /** Where to send the browser. */
  authorizationUrl: URL;
  /** Value of the cookie that binds this sign-in to this browser. */
  flowToken: string;
}

export interface SignedIn {
  issuer: string;
  subject: string;
  email?: string;
  name?: string;
  /** The ID token's claims, completed by the UserInfo endpoint's where the provider has one. */
  claims: Record<string, unknown>;
  /** Why UserInfo could not be read, when the ID token's claims had to do without it. */
  userinfoFailure?: unknown;
  /** The ID token, its expiry and `sid`, and the refresh token when the provider issued one. */
  tokens: SessionTokens & { idToken: string };
  returnTo: string;
}

/**
 * Starts the authorization code flow with `state`, `nonce` and PKCE S256 (OpenID Connect Core 3.1.2,
 * RFC 7636). All three are kept server-side under a random id that only this browser's cookie holds.
 */
export async function startLogin(
  db: Db,
  provider: Pick<ConnectedProvider, 'id' | 'connection' | 'scopes'>,
  redirectUri: string,
  returnTo: string,
  now = Date.now(),
): Promise<LoginStart> {
  const config = provider.connection.configuration();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const codeVerifier = client.randomPKCECodeVerifier();
  const flowToken = randomToken();
  await db
    .insertInto('login_flows')
    .values({
      id_hash: sha256(flowToken),
      state,
      nonce,
      code_verifier: codeVerifier,
      return_to: returnTo,
      expires_at: now + LOGIN_FLOW_TTL_MS,
      provider: provider.id,
    })
    .execute();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: provider.scopes.join(' '),
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
  });
  return { authorizationUrl, flowToken };
}

/**
 * Bounds the sign-in flow rows one address can make (per replica: counted in memory, in the
 * order they were started), so unauthenticated calls cannot fill the database.
 */
export class LoginFlowCap {
  private readonly pending = new LRUCache<string, Array<{ idHash: string; expiresAt: number }>>(
    growingCapacity(10_000),
  );

  constructor(private readonly max = MAX_PENDING_LOGINS_PER_ADDRESS) {}

  /** Counts a flow just stored for `address`, deleting that address's oldest beyond the cap. */
  async admit(db: Db, address: string, flowToken: string, now = Date.now()): Promise<void> {
    const flows = (this.pending.get(address) ?? []).filter((flow) => flow.expiresAt > now);
    flows.push({ idHash: sha256(flowToken), expiresAt: now + LOGIN_FLOW_TTL_MS });
    const dropped = flows.splice(0, Math.max(0, flows.length - this.max));
    this.pending.set(address, flows);
    if (dropped.length === 0) return;
    await db
      .deleteFrom('login_flows')
      .where(
        'id_hash',
        'in',
        dropped.map((flow) => flow.idHash),
      )
      .execute();
  }
}

/**
 * Finishes the flow. The flow row is deleted before the code is redeemed, so a replayed callback
 * finds nothing; every ID token check of OpenID Connect Core 3.1.3.7 is openid-client's. A flow
 * started with another provider than the callback's is refused before any token request: a code
 * from one provider must never be sent, with this client's credentials, to another (the mix-up
 * attack, RFC 9700 4.4).
 */
export async function finishLogin(
  db: Db,
  provider: Pick<ConnectedProvider, 'id' | 'connection'>,
  flowToken: string | undefined,
  callbackUrl: URL,
  now = Date.now(),
): Promise<SignedIn> {
  if (!flowToken) {
    throw new AuthError('LOGIN_FLOW_MISSING', 'this sign-in was not started in this browser, or its cookie expired');
  }
  const flow = await db
    .deleteFrom('login_flows')
    .where('id_hash', '=', sha256(flowToken))
    .returningAll()
    .executeTakeFirst();
  if (!flow || Number(flow.expires_at) <= now) {
    throw new AuthError('LOGIN_FLOW_UNKNOWN', 'this sign-in has expired or was already completed');
  }
  if (flow.provider !== provider.id) {
    throw new AuthError(
      'LOGIN_FLOW_PROVIDER_MISMATCH',
      `this sign-in was started with provider ${flow.provider}, but came back to the callback of ${provider.id}`,
    );
  }
  // The configuration the code was redeemed with also fetches UserInfo.
  const { config, tokens } = await provider.connection.tokenRequest(async (config) => ({
    config,
    tokens: await client.authorizationCodeGrant(config, callbackUrl, {
      expectedState: flow.state,
      expectedNonce: flow.nonce,
      pkceCodeVerifier: flow.code_verifier,
      idTokenExpected: true,
    }),
  }));
  const claims = tokens.claims();
  if (!claims || !tokens.id_token) throw new AuthError('ID_TOKEN_MISSING', 'the provider returned no ID token');
  assertIssuedInPast(claims, now);
  const userinfo = await fetchUserInfoClaims(config, tokens.access_token, claims.sub);
  if ('failure' in userinfo && typeof claims.email !== 'string') {
    // Without UserInfo there is no telling "no email" from "could not ask": the person retries.
    throw new AuthError('USERINFO_UNAVAILABLE', 'the provider’s UserInfo endpoint failed', { cause: userinfo.failure });
  }
  const merged = { ...('claims' in userinfo ? userinfo.claims : {}), ...claims };
  return {
    issuer: claims.iss,
    subject: claims.sub,
    email: nonEmptyString(merged.email),
    // Providers that share no name often share a username (Core 5.1 preferred_username).
    name: nonEmptyString(merged.name) ?? nonEmptyString(merged.preferred_username),
    ...('failure' in userinfo ? { userinfoFailure: userinfo.failure } : {}),
    claims: merged,
    tokens: { ...sessionTokensOf(claims, tokens.refresh_token), idToken: tokens.id_token },
    returnTo: flow.return_to,
  };
}

/** openid-client only checks that `iat` is a number; Core 3.1.3.7 step 10 leaves the bound to the client. */
/** Removes sign-ins that were started and never finished; run periodically. */
export async function purgeExpiredLoginFlows(db: Db, now = Date.now()): Promise<void> {
  await db.deleteFrom('login_flows').where('expires_at', '<=', now).execute();
}

export function assertIssuedInPast(claims: client.IDToken, now: number): void {
  if (claims.iat * 1000 > now + CLOCK_TOLERANCE_MS) {
    throw new AuthError('ID_TOKEN_ISSUED_IN_FUTURE', 'the ID token claims to be issued in the future');
  }
}

/** What a session keeps of a token response besides the ID token itself. */
export function sessionTokensOf(claims: client.IDToken, refreshToken: string | undefined): SessionTokens {
  return {
    idTokenExpiresAt: claims.exp * 1000,
    ...(refreshToken ? { refreshToken } : {}),
    ...(typeof claims.sid === 'string' && claims.sid ? { sid: claims.sid } : {}),
  };
}

/**
 * Okta, Entra and others put email or groups only in UserInfo unless configured otherwise; its
 * `sub` must equal the ID token's (Core 5.3.2), which openid-client checks. A failure is
 * returned, not swallowed: the caller decides whether the ID token's claims can do without it.
 */
export async function fetchUserInfoClaims(
  config: client.Configuration,
  accessToken: string,
  subject: string,
): Promise<{ claims: Record<string, unknown> } | { failure: unknown }> {
  if (!config.serverMetadata().userinfo_endpoint) return { claims: {} };
  try {
    return { claims: { ...(await client.fetchUserInfo(config, accessToken, subject)) } };
  } catch (error) {
    return { failure: error };
  }
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
