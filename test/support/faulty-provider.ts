/**
 * A real, minimal OpenID provider on 127.0.0.1 whose ID tokens can be made wrong on purpose, so
 * tests can prove the gateway refuses each token a Relying Party must refuse.
 * https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
 *
 * It speaks only the code flow with PKCE (S256) and a confidential client, signs in one test user
 * without a login form, and keeps everything in memory until `close()`. On request it also issues
 * (rotating) refresh tokens, and it signs back-channel logout tokens for tests to post.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';

/** What is wrong with the next sign-in; read when the code is issued or redeemed. */
export type TokenFault =
  | 'none'
  /** The authorization endpoint refuses the user: `error=access_denied` back to the client. */
  | 'access-denied'
  | 'wrong-iss'
  | 'wrong-aud'
  /** `exp` and `iat` well beyond the usual 30 s clock tolerance in the past. */
  | 'expired'
  /** `iat` an hour ahead (with `exp` five minutes after it), as from a provider whose clock runs fast. */
  | 'iat-future'
  /** Signed by a key outside the JWKS that claims the current key's `kid`. */
  | 'bad-signature'
  /** An unsecured JWT: `alg: none` and an empty signature. */
  | 'alg-none'
  | 'wrong-nonce'
  | 'missing-nonce'
  /** `aud` names a second client and `azp` names that one, not ours. */
  | 'wrong-azp'
  /** The key rotates just before signing, so a cached JWKS lacks the `kid`; a correct RP refetches. */
  | 'unknown-kid-then-rotate'
  /** HS256 keyed with the client secret although the metadata allows RS256 only. */
  | 'hs256-with-client-secret'
  /**
   * `sub` names another user. At sign-in that is just someone else signing in; a refreshed ID token
   * must name the same user as the first (Core 12.2), so a refresh is where it is a fault.
   */
  | 'other-subject';

export interface FaultyProviderOptions {
  clientId: string;
  clientSecret: string;
  /** The only redirect URI registered for the client; compared exactly. */
  redirectUri: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  subject?: string;
  email?: string;
  name?: string;
  /** Advertise and serve `end_session_endpoint` (RP-Initiated Logout); default true. */
  endSessionEndpoint?: boolean;
  /** Issue a refresh token with every code redeemed; default false. Also settable later. */
  refreshTokens?: boolean;
  /** Lifetime of ID tokens (`exp` - `iat`); default 300 s. Also settable later. */
  idTokenLifetimeSeconds?: number;
  /** Publish the issuer as `http://127.0.0.1:<port>/`, with the trailing slash Auth0's has; default false. */
  issuerTrailingSlash?: boolean;
  /**
   * `token_endpoint_auth_methods_supported` in discovery; default both client_secret methods, and
   * `null` leaves the member out (RFC 8414 2: then client_secret_basic is the default).
   */
  tokenEndpointAuthMethods?: string[] | null;
  /**
   * How the token endpoint lets the client authenticate, whatever discovery advertises; default
   * both. Fewer than advertised makes a provider whose published default is wrong.
   */
  acceptedClientAuth?: Array<'basic' | 'post'>;
  /** `Cache-Control` of the discovery document; default `no-cache`. */
  discoveryCacheControl?: string;
  /**
   * Whether Basic credentials are form-decoded as RFC 6749 2.3.1 says; default true. False
   * compares them as sent, as glewlwyd and LemonLDAP::NG do, so a secret with `-` (sent as `%2D`)
   * fails under client_secret_basic.
   */
  decodesBasicCredentials?: boolean;
}

export interface TokenRequestRecord {
  grantType: string;
  /** Empty for a refresh. */
  code: string;
  codeVerifier?: string;
  clientAuth: 'basic' | 'post' | 'none';
  ok: boolean;
}

export interface LogoutRequestRecord {
  idTokenHint?: string;
  clientId?: string;
  postLogoutRedirectUri?: string;
  state?: string;
}

/** How `signLogoutToken` signs. */
export type LogoutTokenSigning =
  /** With the current key, as the provider would. */
  | 'valid'
  /** With a key outside the JWKS that claims the current key's `kid`. */
  | 'stray-key'
  /** An unsecured JWT: `alg: none` and an empty signature. */
  | 'alg-none';

export interface LogoutTokenOptions {
  sub?: string;
  sid?: string;
  /** Claims added last, so they can replace any other (`iss`, `aud`, `iat`, `events`, `nonce`...). */
  extra?: Record<string, unknown>;
  /** Claims left out: `jti`, `iat`, `events`... */
  omit?: string[];
  /** Default 'valid'. */
  signing?: LogoutTokenSigning;
}

/** The member of `events` that makes a JWT a logout token (Back-Channel Logout 1.0 section 2.4). */
export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

export interface FaultyProvider {
  /** `http://127.0.0.1:<port>` (with a trailing `/` when so started); also the `iss` of every correct ID token. */
  issuer: string;
  metadataUrl: string;
  /** Set between sign-ins to choose the next defect. */
  fault: TokenFault;
  /** Who the next sign-in is: `sub` and `email` of the next ID token and UserInfo answer. */
  subject: string;
  email: string;
  /**
   * Claims merged into the next ID token's payload and UserInfo answer, after `email`,
   * `email_verified` and `name` (so they can replace them; an `undefined` value leaves one out):
   * `groups`, `realm_access`, `_claim_names`, `email_verified: false`...
   */
  extraClaims: Record<string, unknown>;
  /**
   * Claims merged into the next UserInfo answer only, after `extraClaims`: as Okta's custom
   * authorization servers send `groups` when the claim is set to appear in UserInfo alone.
   */
  userinfoOnlyClaims: Record<string, unknown>;
  /**
   * Claims merged into what refreshes say about the user (ID token and UserInfo), over what the
   * sign-in said: the user left a group, lost an address, since signing in.
   */
  refreshClaims: Record<string, unknown>;
  /** Replaces the signing key (and the only JWKS entry) with a new key under a new `kid`. */
  rotateKey(): Promise<void>;
  /**
   * Switches to a new key of this algorithm and advertises only it in discovery, as a provider
   * that moves from RS256 to ES256 does.
   */
  switchAlgorithm(alg: 'RS256' | 'ES256'): Promise<void>;
  /** Requests for the discovery document so far. */
  discoveryRequests: number;
  tokenRequests: TokenRequestRecord[];
  jwksRequests: number;
  logoutRequests: LogoutRequestRecord[];
  lastIdToken?: string;
  /** The `sid` of the last sign-in; every ID token of that sign-in and its refreshes carries it. */
  lastSid?: string;
  /** Whether redeeming a code also issues a refresh token. */
  issueRefreshTokens: boolean;
  /** Whether each refresh replaces the refresh token (the old one then counts as reused); default true. */
  rotateRefreshTokens: boolean;
  /** Whether refresh responses carry an ID token (Core 12.2 makes it optional); default true. */
  idTokenOnRefresh: boolean;
  /** `exp` - `iat` of the next ID tokens, in seconds. */
  idTokenLifetimeSeconds: number;
  /** Token requests with `grant_type=refresh_token`, answered or not. */
  refreshRequests: number;
  /** The last refresh token issued, at a sign-in or a refresh. */
  lastRefreshToken?: string;
  /**
   * Makes every refresh token of `subject` (default: the current `subject`) invalid, as when the
   * user is removed or their sessions are revoked at the provider: the next refresh gets `invalid_grant`.
   */
  revokeRefreshTokens(subject?: string): void;
  /** While true, every connection is dropped unanswered, as if the provider were unreachable. */
  unreachable: boolean;
  /**
   * While set, the token endpoint answers an authenticated code redemption with this error
   * instead of tokens, e.g. glewlwyd's non-standard `{ status: 403, error: 'invalid_code' }`.
   */
  codeError?: { status: number; error: string };
  /** Milliseconds the token endpoint waits before answering; default 0. */
  tokenDelayMs: number;
  /** While true, the UserInfo endpoint answers 503, as during an outage of that service. */
  userinfoFails: boolean;
  /** A back-channel logout token (Back-Channel Logout 1.0 section 2.4) for this provider's client. */
  signLogoutToken(options?: LogoutTokenOptions): Promise<string>;
  close(): Promise<void>;
}

interface SigningKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicJwk: JWK;
}

interface IssuedCode {
  redirectUri: string;
  codeChallenge: string;
  nonce?: string;
  /** The provider-side session this sign-in belongs to. */
  sid: string;
  expiresAt: number;
  used: boolean;
}

/** One refresh token; all tokens rotated from the same sign-in share a `grantId`. */
interface RefreshGrant {
  grantId: string;
  user: UserClaims;
  sid: string;
  /** Rotated away: presenting it again revokes the whole grant (RFC 9700 4.14.2). */
  used: boolean;
  revoked: boolean;
}

/** What the provider says about the user; `undefined` values are left out of the JSON. */
type UserClaims = Record<string, unknown> & { sub: string };

const codeLifetimeSeconds = 60;
const tokenLifetimeSeconds = 300;

async function createSigningKey(alg: 'RS256' | 'ES256' = 'RS256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return { kid, alg, privateKey, publicJwk: { ...publicJwk, kid, alg, use: 'sig' } };
}

function epochSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function base64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Compares digests so the time taken says nothing about where two secrets differ. */
function secretsMatch(given: string, expected: string): boolean {
  return timingSafeEqual(sha256(given), sha256(expected));
}

/** RFC 6749 2.3.1: the id and secret are form-encoded before base64, so `+` means space. */
function formDecode(value: string): string {
  return decodeURIComponent(value.replace(/\+/g, ' '));
}

function readBasicCredentials(
  header: string | undefined,
  decode: (value: string) => string,
): { id: string; secret: string } | undefined {
  const match = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  try {
    return { id: decode(decoded.slice(0, colon)), secret: decode(decoded.slice(colon + 1)) };
  } catch {
    return undefined;
  }
}

async function readForm(request: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) break;
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    ...headers,
  });
  response.end(JSON.stringify(body));
}

function sendText(response: ServerResponse, status: number, text: string): void {
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  response.end(text);
}

function redirect(response: ServerResponse, location: URL): void {
  response.writeHead(302, { location: location.href, 'cache-control': 'no-store' });
  response.end();
}

/** Starts the provider on 127.0.0.1 and resolves once it accepts connections. */
export async function startFaultyProvider(options: FaultyProviderOptions): Promise<FaultyProvider> {
  const name = options.name ?? 'Ada Lovelace';
  const servesEndSession = options.endSessionEndpoint ?? true;

  let signingKey = await createSigningKey();
  // Never published: tokens it signs carry the real kid, so only a signature check can catch them.
  const strayKey = await createSigningKey();
  const codes = new Map<string, IssuedCode>();
  const refreshTokens = new Map<string, RefreshGrant>();
  const accessTokens = new Map<string, { claims: UserClaims; expiresAt: number }>();

  const server = createServer((request, response) => {
    if (provider.unreachable) {
      request.socket.destroy();
      return;
    }
    handle(request, response).catch((error: unknown) => {
      if (!response.headersSent) sendJson(response, 500, { error: 'server_error', error_description: String(error) });
      else response.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  const issuer = options.issuerTrailingSlash ? `${origin}/` : origin;
  const acceptedClientAuth = options.acceptedClientAuth ?? ['basic', 'post'];
  const advertisedClientAuth =
    options.tokenEndpointAuthMethods === undefined
      ? ['client_secret_basic', 'client_secret_post']
      : options.tokenEndpointAuthMethods;

  const provider: FaultyProvider = {
    issuer,
    metadataUrl: `${origin}/.well-known/openid-configuration`,
    fault: 'none',
    subject: options.subject ?? 'test-user-1',
    email: options.email ?? 'ada@example.test',
    extraClaims: {},
    userinfoOnlyClaims: {},
    refreshClaims: {},
    async rotateKey() {
      signingKey = await createSigningKey(signingKey.alg);
    },
    async switchAlgorithm(alg) {
      signingKey = await createSigningKey(alg);
      metadata.id_token_signing_alg_values_supported = [alg];
    },
    discoveryRequests: 0,
    tokenRequests: [],
    jwksRequests: 0,
    logoutRequests: [],
    lastIdToken: undefined,
    lastSid: undefined,
    issueRefreshTokens: options.refreshTokens ?? false,
    rotateRefreshTokens: true,
    idTokenOnRefresh: true,
    idTokenLifetimeSeconds: options.idTokenLifetimeSeconds ?? tokenLifetimeSeconds,
    refreshRequests: 0,
    lastRefreshToken: undefined,
    revokeRefreshTokens(subject = provider.subject) {
      for (const grant of refreshTokens.values()) if (grant.user.sub === subject) grant.revoked = true;
    },
    unreachable: false,
    codeError: undefined,
    tokenDelayMs: 0,
    userinfoFails: false,
    signLogoutToken: (logout = {}) => buildLogoutToken(logout),
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        // Keep-alive sockets from fetch would otherwise hold close() open.
        server.closeAllConnections();
      });
    },
  };

  const metadata = {
    issuer,
    authorization_endpoint: `${origin}/authorize`,
    token_endpoint: `${origin}/token`,
    jwks_uri: `${origin}/jwks`,
    userinfo_endpoint: `${origin}/userinfo`,
    ...(servesEndSession ? { end_session_endpoint: `${origin}/logout` } : {}),
    response_types_supported: ['code'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    code_challenge_methods_supported: ['S256'],
    id_token_signing_alg_values_supported: ['RS256'],
    ...(advertisedClientAuth ? { token_endpoint_auth_methods_supported: advertisedClientAuth } : {}),
    subject_types_supported: ['public'],
    scopes_supported: ['openid', 'email', 'profile'],
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nonce', 'sid', 'email', 'email_verified', 'name'],
    backchannel_logout_supported: true,
    backchannel_logout_session_supported: true,
  };

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', origin);
    const route = `${request.method ?? 'GET'} ${url.pathname}`;
    switch (route) {
      case 'GET /.well-known/openid-configuration':
        provider.discoveryRequests += 1;
        return sendJson(response, 200, metadata, { 'cache-control': options.discoveryCacheControl ?? 'no-cache' });
      case 'GET /authorize':
        return authorize(url.searchParams, response);
      case 'POST /token':
        return token(request, response);
      case 'GET /jwks':
        provider.jwksRequests += 1;
        return sendJson(response, 200, { keys: [signingKey.publicJwk] }, { 'cache-control': 'no-cache' });
      case 'GET /userinfo':
        return userinfo(request, response);
      case 'GET /logout':
        if (servesEndSession) return logout(url.searchParams, response);
        return sendText(response, 404, 'not found');
      default:
        return sendText(response, 404, 'not found');
    }
  }

  function authorize(params: URLSearchParams, response: ServerResponse): void {
    // RFC 6749 4.1.2.1: with an unknown client or redirect URI there is nowhere safe to send an error.
    if (params.get('client_id') !== options.clientId) return sendText(response, 400, 'unknown client_id');
    if (params.get('redirect_uri') !== options.redirectUri) {
      return sendText(response, 400, 'redirect_uri is not registered for this client');
    }
    const back = new URL(options.redirectUri);
    const state = params.get('state');
    const refuse = (error: string, description: string): void => {
      back.searchParams.set('error', error);
      back.searchParams.set('error_description', description);
      if (state) back.searchParams.set('state', state);
      redirect(response, back);
    };
    if (params.get('response_type') !== 'code') {
      return refuse('unsupported_response_type', 'only response_type=code is supported');
    }
    if (!(params.get('scope') ?? '').split(' ').includes('openid')) {
      return refuse('invalid_scope', 'scope must include openid');
    }
    const codeChallenge = params.get('code_challenge');
    if (!codeChallenge || params.get('code_challenge_method') !== 'S256') {
      return refuse('invalid_request', 'PKCE with code_challenge_method=S256 is required');
    }
    if (!state) return refuse('invalid_request', 'state is required');
    if (provider.fault === 'access-denied') return refuse('access_denied', 'the test user declined');

    const code = base64url(randomBytes(32));
    codes.set(code, {
      redirectUri: options.redirectUri,
      codeChallenge,
      nonce: params.get('nonce') ?? undefined,
      sid: base64url(randomBytes(16)),
      expiresAt: epochSeconds() + codeLifetimeSeconds,
      used: false,
    });
    back.searchParams.set('code', code);
    back.searchParams.set('state', state);
    redirect(response, back);
  }

  async function token(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const form = await readForm(request);
    if (provider.tokenDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, provider.tokenDelayMs));
    const code = form.get('code') ?? '';
    const codeVerifier = form.get('code_verifier') ?? undefined;
    const basic = readBasicCredentials(
      request.headers.authorization,
      options.decodesBasicCredentials === false ? (value) => value : formDecode,
    );
    const clientAuth: TokenRequestRecord['clientAuth'] = basic ? 'basic' : form.has('client_secret') ? 'post' : 'none';
    const grantType = form.get('grant_type') ?? '';
    const record: TokenRequestRecord = { grantType, code, codeVerifier, clientAuth, ok: false };
    if (grantType === 'refresh_token') provider.refreshRequests += 1;
    provider.tokenRequests.push(record);

    const client = basic ?? {
      id: form.get('client_id') ?? '',
      secret: form.get('client_secret') ?? '',
    };
    const clientIdsAgree = !basic || !form.has('client_id') || form.get('client_id') === basic.id;
    if (
      clientAuth === 'none' ||
      !acceptedClientAuth.includes(clientAuth) ||
      !clientIdsAgree ||
      client.id !== options.clientId ||
      !secretsMatch(client.secret, options.clientSecret)
    ) {
      // RFC 6749 5.2: a client that tried the Authorization header gets a challenge back.
      const challenge: Record<string, string> = basic ? { 'www-authenticate': 'Basic realm="token"' } : {};
      return sendJson(
        response,
        401,
        { error: 'invalid_client', error_description: 'client authentication failed' },
        challenge,
      );
    }
    const invalidGrant = (description: string): void =>
      sendJson(response, 400, { error: 'invalid_grant', error_description: description });
    if (grantType === 'refresh_token') return refresh(form.get('refresh_token') ?? '', record, response, invalidGrant);
    if (grantType !== 'authorization_code') {
      return sendJson(response, 400, { error: 'unsupported_grant_type' });
    }
    if (provider.codeError) return sendJson(response, provider.codeError.status, { error: provider.codeError.error });

    const issued = codes.get(code);
    if (!issued) return invalidGrant('unknown authorization code');
    if (issued.used) return invalidGrant('authorization code was already used');
    // Consumed on the first authenticated attempt, right or wrong, so a verifier cannot be guessed.
    issued.used = true;
    if (issued.expiresAt < epochSeconds()) return invalidGrant('authorization code expired');
    if (form.get('redirect_uri') !== issued.redirectUri) return invalidGrant('redirect_uri does not match');
    if (!codeVerifier || base64url(sha256(codeVerifier)) !== issued.codeChallenge) {
      return invalidGrant('code_verifier does not match code_challenge');
    }

    // One snapshot for both, so UserInfo never contradicts the ID token it accompanies.
    const user: UserClaims = {
      sub: provider.subject,
      email: provider.email,
      email_verified: true,
      name,
      ...provider.extraClaims,
    };
    const accessToken = base64url(randomBytes(32));
    accessTokens.set(accessToken, {
      claims: { ...user, ...provider.userinfoOnlyClaims },
      expiresAt: epochSeconds() + tokenLifetimeSeconds,
    });
    const idToken = await buildIdToken(provider.fault, issued.nonce, user, issued.sid);
    provider.lastIdToken = idToken;
    provider.lastSid = issued.sid;
    const refreshToken = provider.issueRefreshTokens
      ? issueRefreshToken({ grantId: base64url(randomBytes(16)), user, sid: issued.sid, used: false, revoked: false })
      : undefined;
    record.ok = true;
    sendJson(response, 200, {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: tokenLifetimeSeconds,
      id_token: idToken,
      ...(refreshToken ? { refresh_token: refreshToken } : {}),
    });
  }

  function issueRefreshToken(grant: RefreshGrant): string {
    const refreshToken = base64url(randomBytes(32));
    refreshTokens.set(refreshToken, grant);
    provider.lastRefreshToken = refreshToken;
    return refreshToken;
  }

  /** RFC 6749 section 6, with rotation and reuse detection as RFC 9700 4.14.2 recommends. */
  async function refresh(
    presented: string,
    record: TokenRequestRecord,
    response: ServerResponse,
    invalidGrant: (description: string) => void,
  ): Promise<void> {
    const grant = refreshTokens.get(presented);
    if (!grant) return invalidGrant('unknown refresh token');
    if (grant.used) {
      for (const other of refreshTokens.values()) if (other.grantId === grant.grantId) other.revoked = true;
      return invalidGrant('refresh token was already used; the grant is revoked');
    }
    if (grant.revoked) return invalidGrant('refresh token was revoked');
    const accessToken = base64url(randomBytes(32));
    const user = { ...grant.user, ...provider.refreshClaims };
    accessTokens.set(accessToken, { claims: user, expiresAt: epochSeconds() + tokenLifetimeSeconds });
    const idToken = provider.idTokenOnRefresh
      ? await buildIdToken(provider.fault, undefined, user, grant.sid)
      : undefined;
    if (idToken) provider.lastIdToken = idToken;
    let refreshToken: string | undefined;
    if (provider.rotateRefreshTokens) {
      grant.used = true;
      refreshToken = issueRefreshToken({ ...grant, used: false });
    }
    record.ok = true;
    sendJson(response, 200, {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: tokenLifetimeSeconds,
      ...(idToken ? { id_token: idToken } : {}),
      ...(refreshToken ? { refresh_token: refreshToken } : {}),
    });
  }

  async function buildIdToken(
    fault: TokenFault,
    nonce: string | undefined,
    user: UserClaims,
    sid: string,
  ): Promise<string> {
    const now = epochSeconds();
    const { sub, ...profile } = user;
    const claims: JWTPayload & Record<string, unknown> = {
      iss: issuer,
      sub,
      aud: options.clientId,
      exp: now + provider.idTokenLifetimeSeconds,
      iat: now,
      ...(nonce === undefined ? {} : { nonce }),
      sid,
      ...profile,
    };
    let key = signingKey;
    switch (fault) {
      case 'none':
      case 'access-denied':
        break;
      case 'wrong-iss':
        claims.iss = 'https://impostor.example.test';
        break;
      case 'wrong-aud':
        claims.aud = 'another-client';
        break;
      case 'expired':
        claims.iat = now - 900;
        claims.exp = now - 600;
        break;
      case 'iat-future':
        claims.iat = now + 3600;
        claims.exp = now + 3600 + tokenLifetimeSeconds;
        break;
      case 'wrong-nonce':
        claims.nonce = base64url(randomBytes(16));
        break;
      case 'missing-nonce':
        delete claims.nonce;
        break;
      case 'wrong-azp':
        claims.aud = [options.clientId, 'other'];
        claims.azp = 'other';
        break;
      case 'bad-signature':
        key = { ...strayKey, kid: signingKey.kid };
        break;
      case 'unknown-kid-then-rotate':
        await provider.rotateKey();
        key = signingKey;
        break;
      case 'alg-none':
        return `${base64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${base64url(JSON.stringify(claims))}.`;
      case 'hs256-with-client-secret':
        return new SignJWT(claims)
          .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
          .sign(new TextEncoder().encode(options.clientSecret));
      case 'other-subject':
        claims.sub = `${sub}-someone-else`;
        break;
    }
    return new SignJWT(claims).setProtectedHeader({ alg: key.alg, typ: 'JWT', kid: key.kid }).sign(key.privateKey);
  }

  async function buildLogoutToken({ sub, sid, extra = {}, omit = [], signing = 'valid' }: LogoutTokenOptions) {
    const now = epochSeconds();
    const claims: JWTPayload & Record<string, unknown> = {
      iss: issuer,
      aud: options.clientId,
      iat: now,
      exp: now + 120,
      jti: base64url(randomBytes(16)),
      events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
      ...(sub === undefined ? {} : { sub }),
      ...(sid === undefined ? {} : { sid }),
      ...extra,
    };
    for (const name of omit) delete claims[name];
    if (signing === 'alg-none') {
      return `${base64url(JSON.stringify({ alg: 'none', typ: 'logout+jwt' }))}.${base64url(JSON.stringify(claims))}.`;
    }
    const key = signing === 'stray-key' ? { ...strayKey, kid: signingKey.kid } : signingKey;
    return new SignJWT(claims)
      .setProtectedHeader({ alg: key.alg, typ: 'logout+jwt', kid: key.kid })
      .sign(key.privateKey);
  }

  function userinfo(request: IncomingMessage, response: ServerResponse): void {
    if (provider.userinfoFails) return sendJson(response, 503, { error: 'temporarily_unavailable' });
    const match = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? '');
    const grant = match?.[1] ? accessTokens.get(match[1]) : undefined;
    if (!grant || grant.expiresAt < epochSeconds()) {
      return sendJson(
        response,
        401,
        { error: 'invalid_token' },
        { 'www-authenticate': 'Bearer error="invalid_token"' },
      );
    }
    sendJson(response, 200, grant.claims);
  }

  function logout(params: URLSearchParams, response: ServerResponse): void {
    const record: LogoutRequestRecord = {
      idTokenHint: params.get('id_token_hint') ?? undefined,
      clientId: params.get('client_id') ?? undefined,
      postLogoutRedirectUri: params.get('post_logout_redirect_uri') ?? undefined,
      state: params.get('state') ?? undefined,
    };
    provider.logoutRequests.push(record);
    if (!record.postLogoutRedirectUri) return sendText(response, 200, 'signed out');
    const back = new URL(record.postLogoutRedirectUri);
    if (record.state) back.searchParams.set('state', record.state);
    redirect(response, back);
  }

  return provider;
}
