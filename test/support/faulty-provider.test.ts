/**
 * The faulty provider driven by openid-client v6 itself, as the gateway drives it: each fault must
 * produce a token endpoint success (so the ID token, not the exchange, is what gets refused) and
 * openid-client must refuse it for the reason the fault stands for.
 * https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
 */
import * as client from 'openid-client';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { startFaultyProvider, type FaultyProvider, type TokenFault } from './faulty-provider.js';

const clientId = 'gatehouse-test';
const clientSecret = 'test-secret-that-is-long-enough-for-hs256';
// Never contacted: the tests read the provider's 302 instead of following it.
const redirectUri = 'http://127.0.0.1:9/oidc/callback';

let provider: FaultyProvider;

beforeAll(async () => {
  provider = await startFaultyProvider({ clientId, clientSecret, redirectUri });
});
afterAll(async () => {
  await provider.close();
});
beforeEach(() => {
  provider.fault = 'none';
});
afterEach(() => {
  vi.useRealTimers();
});

interface ClientOptions {
  auth?: 'basic' | 'post';
  secret?: string;
  /** Verify ID token signatures against the JWKS (openid-client skips this by default). */
  verifySignatures?: boolean;
}

/** A fresh Configuration, hence a fresh JWKS cache, for every call. */
async function connect(options: ClientOptions = {}): Promise<client.Configuration> {
  const secret = options.secret ?? clientSecret;
  const auth = options.auth === 'post' ? client.ClientSecretPost(secret) : client.ClientSecretBasic(secret);
  // Plain HTTP is only tolerable because the provider listens on loopback.
  const config = await client.discovery(new URL(provider.issuer), clientId, undefined, auth, {
    execute: [client.allowInsecureRequests],
  });
  if (options.verifySignatures) client.enableNonRepudiationChecks(config);
  return config;
}

interface Authorization {
  callbackUrl: URL;
  checks: client.AuthorizationCodeGrantChecks;
}

/** Runs the front channel: builds the request, lets the provider answer, returns where it sent us. */
async function authorize(config: client.Configuration): Promise<Authorization> {
  const pkceCodeVerifier = client.randomPKCECodeVerifier();
  const expectedState = client.randomState();
  const expectedNonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid email profile',
    code_challenge: await client.calculatePKCECodeChallenge(pkceCodeVerifier),
    code_challenge_method: 'S256',
    state: expectedState,
    nonce: expectedNonce,
  });
  const response = await fetch(url, { redirect: 'manual' });
  expect(response.status).toBe(302);
  const callbackUrl = new URL(response.headers.get('location') ?? '');
  return {
    callbackUrl,
    checks: { pkceCodeVerifier, expectedState, expectedNonce, idTokenExpected: true },
  };
}

function redeem(config: client.Configuration, { callbackUrl, checks }: Authorization) {
  return client.authorizationCodeGrant(config, callbackUrl, checks);
}

async function signIn(config: client.Configuration) {
  return redeem(config, await authorize(config));
}

function lastTokenRequest() {
  return provider.tokenRequests.at(-1);
}

describe('a correct provider', () => {
  it('completes a sign-in with client_secret_basic and returns the user claims', async () => {
    const config = await connect();
    const tokens = await signIn(config);

    expect(tokens.claims()).toMatchObject({
      iss: provider.issuer,
      aud: clientId,
      sub: 'test-user-1',
      email: 'ada@example.test',
      email_verified: true,
      name: 'Ada Lovelace',
    });
    expect(tokens.id_token).toBe(provider.lastIdToken);
    expect(lastTokenRequest()).toMatchObject({ clientAuth: 'basic', ok: true });
    expect(lastTokenRequest()?.codeVerifier).toBeTruthy();
  });

  it('completes a sign-in with client_secret_post and verified signatures', async () => {
    const config = await connect({ auth: 'post', verifySignatures: true });
    const before = provider.jwksRequests;

    await expect(signIn(config)).resolves.toHaveProperty('access_token');
    expect(lastTokenRequest()).toMatchObject({ clientAuth: 'post', ok: true });
    expect(provider.jwksRequests).toBe(before + 1);
  });

  it('serves userinfo for the access token it issued', async () => {
    const config = await connect();
    const tokens = await signIn(config);

    const userinfo = await client.fetchUserInfo(config, tokens.access_token, 'test-user-1');
    expect(userinfo).toMatchObject({ sub: 'test-user-1', email: 'ada@example.test' });
    await expect(client.fetchUserInfo(config, 'not-a-token', 'test-user-1')).rejects.toBeInstanceOf(
      client.WWWAuthenticateChallengeError,
    );
  });

  it('ends the session and returns to post_logout_redirect_uri with the state', async () => {
    const config = await connect();
    const tokens = await signIn(config);
    const url = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token ?? '',
      post_logout_redirect_uri: 'http://127.0.0.1:9/signed-out',
      state: 'bye',
    });

    const response = await fetch(url, { redirect: 'manual' });
    expect(response.status).toBe(302);
    expect(response.headers.get('location')).toBe('http://127.0.0.1:9/signed-out?state=bye');
    expect(provider.logoutRequests.at(-1)).toMatchObject({ idTokenHint: tokens.id_token });

    const plain = await fetch(client.buildEndSessionUrl(config), { redirect: 'manual' });
    expect(plain.status).toBe(200);
  });

  it('leaves end_session_endpoint out of discovery when told to', async () => {
    const quiet = await startFaultyProvider({
      clientId,
      clientSecret,
      redirectUri,
      endSessionEndpoint: false,
    });
    try {
      const metadata = (await (await fetch(quiet.metadataUrl)).json()) as Record<string, unknown>;
      expect(metadata).not.toHaveProperty('end_session_endpoint');
      expect(metadata).toMatchObject({
        issuer: quiet.issuer,
        id_token_signing_alg_values_supported: ['RS256'],
      });
    } finally {
      await quiet.close();
    }
  });

  it('refuses an unregistered redirect_uri without redirecting', async () => {
    const config = await connect();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1:9/elsewhere',
      scope: 'openid',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
      state: client.randomState(),
    });

    const response = await fetch(url, { redirect: 'manual' });
    expect(response.status).toBe(400);
    expect(response.headers.get('location')).toBeNull();
  });

  it('replaces the only JWKS entry when the key rotates', async () => {
    const kids = async () =>
      ((await (await fetch(`${provider.issuer}/jwks`)).json()) as { keys: Array<{ kid: string }> }).keys.map(
        (key) => key.kid,
      );
    const before = await kids();

    await provider.rotateKey();
    const after = await kids();
    expect(after).toHaveLength(1);
    expect(after).not.toEqual(before);
  });
});

// Each row: the fault, the stable openid-client error code, and the detail in `cause.message`.
const refusedFaults: Array<[TokenFault, string, string]> = [
  ['wrong-iss', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', '"iss"'],
  ['wrong-aud', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', '"aud"'],
  ['expired', 'OAUTH_JWT_TIMESTAMP_CHECK_FAILED', '"exp"'],
  ['wrong-nonce', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', '"nonce"'],
  ['missing-nonce', 'OAUTH_INVALID_RESPONSE', '"nonce" (nonce) claim missing'],
  ['wrong-azp', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', '"azp"'],
  // Refused by the algorithm check against id_token_signing_alg_values_supported, before any key.
  ['alg-none', 'OAUTH_INVALID_RESPONSE', '"alg"'],
  ['hs256-with-client-secret', 'OAUTH_INVALID_RESPONSE', '"alg"'],
];

describe('openid-client refuses a faulty id_token', () => {
  for (const verifySignatures of [false, true]) {
    const mode = verifySignatures ? 'with signature checks' : 'with defaults';
    it.each(refusedFaults)(`refuses fault %s ${mode} (%s)`, async (fault, code, detail) => {
      const config = await connect({ verifySignatures });
      provider.fault = fault;

      const error = await signIn(config).then(
        () => undefined,
        (reason: unknown) => reason,
      );
      expect(lastTokenRequest()?.ok).toBe(true);
      expect(error).toBeInstanceOf(client.ClientError);
      expect(error).toMatchObject({ code, cause: { message: expect.stringContaining(detail) } });
    });
  }

  it('refuses a signature by a key outside the JWKS once signature checks are enabled', async () => {
    const config = await connect({ verifySignatures: true });
    provider.fault = 'bad-signature';

    await expect(signIn(config)).rejects.toMatchObject({
      code: 'OAUTH_INVALID_RESPONSE',
      cause: { message: expect.stringContaining('signature') },
    });
    expect(lastTokenRequest()?.ok).toBe(true);
  });
});

describe('key rotation', () => {
  it('refetches the JWKS for an unknown kid once the cached copy is a minute old', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const config = await connect({ verifySignatures: true });
    await signIn(config);
    const fetched = provider.jwksRequests;

    // openid-client refetches for an unknown kid only when its copy is at least 60 s old.
    vi.setSystemTime(Date.now() + 61_000);
    provider.fault = 'unknown-kid-then-rotate';
    await expect(signIn(config)).resolves.toHaveProperty('id_token');
    expect(provider.jwksRequests).toBe(fetched + 1);
  });

  it('refuses an unknown kid while the cached JWKS is younger than a minute', async () => {
    const config = await connect({ verifySignatures: true });
    await signIn(config);

    provider.fault = 'unknown-kid-then-rotate';
    await expect(signIn(config)).rejects.toMatchObject({ code: 'OAUTH_KEY_SELECTION_FAILED' });
  });
});

/**
 * Not refused by openid-client 6.9.0, so the gateway has to do it (or turn the check on) itself.
 * These pin the library's behaviour: if one starts failing, openid-client has begun refusing the
 * fault and the matching gateway code may be simplified.
 */
describe('what openid-client leaves to the gateway', () => {
  it('accepts a bad signature by default, trusting the token endpoint connection (Core 3.1.3.7 step 6)', async () => {
    const config = await connect();
    provider.fault = 'bad-signature';

    await expect(signIn(config)).resolves.toHaveProperty('id_token');
  });

  it('accepts an id_token issued an hour in the future, even with signature checks', async () => {
    const config = await connect({ verifySignatures: true });
    provider.fault = 'iat-future';

    const tokens = await signIn(config);
    expect(tokens.claims()?.iat).toBeGreaterThan(Date.now() / 1000 + 3000);
  });
});

describe('the token endpoint', () => {
  it('refuses a code used a second time', async () => {
    const config = await connect();
    const authorization = await authorize(config);
    await redeem(config, authorization);

    await expect(redeem(config, authorization)).rejects.toMatchObject({
      code: 'OAUTH_RESPONSE_BODY_ERROR',
      error: 'invalid_grant',
    });
  });

  it('refuses a code_verifier that does not match the code_challenge', async () => {
    const config = await connect();
    const authorization = await authorize(config);
    authorization.checks.pkceCodeVerifier = client.randomPKCECodeVerifier();

    await expect(redeem(config, authorization)).rejects.toMatchObject({
      code: 'OAUTH_RESPONSE_BODY_ERROR',
      error: 'invalid_grant',
    });
    expect(lastTokenRequest()?.ok).toBe(false);
  });

  // RFC 6749 5.2: a client that tried the Authorization header gets a WWW-Authenticate challenge.
  it('refuses a wrong client secret sent with client_secret_basic, with a challenge', async () => {
    const config = await connect({ auth: 'basic', secret: 'not-the-secret' });

    await expect(signIn(config)).rejects.toMatchObject({
      code: 'OAUTH_WWW_AUTHENTICATE_CHALLENGE',
      status: 401,
    });
    expect(lastTokenRequest()).toMatchObject({ clientAuth: 'basic', ok: false });
  });

  it('refuses a wrong client secret sent with client_secret_post', async () => {
    const config = await connect({ auth: 'post', secret: 'not-the-secret' });

    await expect(signIn(config)).rejects.toMatchObject({
      code: 'OAUTH_RESPONSE_BODY_ERROR',
      status: 401,
      error: 'invalid_client',
    });
    expect(lastTokenRequest()).toMatchObject({ clientAuth: 'post', ok: false });
  });
});

describe('the authorization endpoint', () => {
  it('sends access_denied back with the state when the fault is access-denied', async () => {
    const config = await connect();
    provider.fault = 'access-denied';
    const authorization = await authorize(config);

    expect(authorization.callbackUrl.searchParams.get('state')).toBe(authorization.checks.expectedState);
    await expect(redeem(config, authorization)).rejects.toMatchObject({
      code: 'OAUTH_AUTHORIZATION_RESPONSE_ERROR',
      error: 'access_denied',
    });
  });
});
