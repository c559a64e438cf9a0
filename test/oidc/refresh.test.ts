/**
 * The refresher against the faulty provider: which answers extend a session ("refreshed"), which
 * end it ("refused": the grant is gone, or the new ID token fails a check of Core 12.2), and which
 * only mean the provider cannot answer now ("unavailable").
 * https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokenResponse
 */
import { Writable } from 'node:stream';
import { decodeJwt } from 'jose';
import * as client from 'openid-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { ProviderConnection } from '../../src/oidc/provider.js';
import { createTokenRefresher } from '../../src/oidc/refresh.js';
import type { TokenRefresher } from '../../src/sessions/store.js';
import type { User } from '../../src/users/store.js';
import { startFaultyProvider, type FaultyProvider, type TokenFault } from '../support/faulty-provider.js';

/** Sign-in rules that admit anyone, with a recheck interval longer than any token here lives. */
const openRecheck = {
  rules: {
    allowedDomains: [],
    allowUnverified: true,
    allowedGroups: [],
    adminEmails: [],
    adminGroups: [],
    groupsClaim: 'groups',
  },
  recheckMs: 24 * 3_600_000,
  onAccessChanged: async () => undefined,
};

const clientId = 'gatehouse-test';
const clientSecret = 'test-secret-that-is-long-enough';
// Never contacted: the provider's redirect is read, not followed.
const redirectUri = 'http://127.0.0.1:9/v1/auth/auth';

let provider: FaultyProvider;
let connection: ProviderConnection;
let refresher: TokenRefresher;
const logs: string[] = [];

beforeAll(async () => {
  provider = await startFaultyProvider({ clientId, clientSecret, redirectUri, refreshTokens: true });
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const log = createLogger('debug', sink);
  connection = new ProviderConnection(
    { metadataUrl: provider.metadataUrl, clientId, clientSecret, allowHttp: true },
    log,
  );
  await connection.whenAttempted();
  refresher = createTokenRefresher(connection, log, openRecheck);
});
afterAll(async () => {
  connection.close();
  await provider.close();
});
beforeEach(() => {
  Object.assign(provider, {
    fault: 'none',
    rotateRefreshTokens: true,
    idTokenOnRefresh: true,
    idTokenLifetimeSeconds: 300,
    unreachable: false,
  });
});

/** The user the faulty provider signs in, as the gateway recorded them. */
function user(overrides: Partial<User> = {}): User {
  return {
    id: 'user-1',
    issuer: provider.issuer,
    subject: provider.subject,
    email: provider.email,
    name: 'Ada Lovelace',
    role: 'user',
    groups: [],
    disabled: false,
    ...overrides,
  };
}

/** A sign-in through openid-client, as the gateway does it; returns the refresh token it brought. */
async function signIn(): Promise<string> {
  const config = connection.configuration();
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
  const authorize = await fetch(url, { redirect: 'manual' });
  const tokens = await client.authorizationCodeGrant(config, new URL(authorize.headers.get('location')!), {
    pkceCodeVerifier,
    expectedState,
    expectedNonce,
    idTokenExpected: true,
  });
  expect(tokens.refresh_token).toBeDefined();
  return tokens.refresh_token!;
}

describe('a refresh the provider grants', () => {
  it('returns the new ID token, its expiry and sid, and the rotated refresh token', async () => {
    const refreshToken = await signIn();
    const sid = provider.lastSid;
    const outcome = await refresher.refresh(refreshToken, user());

    expect(outcome.result).toBe('refreshed');
    if (outcome.result !== 'refreshed') return;
    const { tokens } = outcome;
    expect(tokens.idToken).toBe(provider.lastIdToken);
    expect(tokens.refreshToken).toBe(provider.lastRefreshToken);
    expect(tokens.refreshToken).not.toBe(refreshToken);
    expect(tokens.sid).toBe(sid);
    expect(tokens.idTokenExpiresAt).toBe(decodeJwt(tokens.idToken!).exp! * 1000);
  });

  it('keeps the refresh token when the provider does not rotate it', async () => {
    provider.rotateRefreshTokens = false;
    const outcome = await refresher.refresh(await signIn(), user());
    expect(outcome.result).toBe('refreshed');
    if (outcome.result === 'refreshed') expect(outcome.tokens).not.toHaveProperty('refreshToken');
  });

  it('without an ID token in the response, checks the grant again after the access token lifetime', async () => {
    provider.idTokenOnRefresh = false;
    const before = Date.now();
    const outcome = await refresher.refresh(await signIn(), user());

    expect(outcome.result).toBe('refreshed');
    if (outcome.result !== 'refreshed') return;
    expect(outcome.tokens.idToken).toBeUndefined();
    // The faulty provider's access tokens live 300 s.
    expect(outcome.tokens.idTokenExpiresAt).toBeGreaterThanOrEqual(before + 299_000);
    expect(outcome.tokens.idTokenExpiresAt).toBeLessThanOrEqual(Date.now() + 300_000);
  });
});

describe('a refresh the provider refuses', () => {
  it('is refused when the refresh token was revoked at the provider (invalid_grant)', async () => {
    const refreshToken = await signIn();
    provider.revokeRefreshTokens();
    expect(await refresher.refresh(refreshToken, user())).toEqual({ result: 'refused' });
  });

  it('is refused for a refresh token already rotated away', async () => {
    const refreshToken = await signIn();
    expect(await refresher.refresh(refreshToken, user())).toMatchObject({ result: 'refreshed' });
    expect(await refresher.refresh(refreshToken, user())).toEqual({ result: 'refused' });
  });

  const faults: TokenFault[] = [
    'other-subject',
    'wrong-iss',
    'wrong-aud',
    'wrong-azp',
    'expired',
    'iat-future',
    'bad-signature',
    'alg-none',
    'hs256-with-client-secret',
  ];
  it.each(faults)('is refused when the new ID token has the fault %s', async (fault) => {
    const refreshToken = await signIn();
    provider.fault = fault;
    expect(await refresher.refresh(refreshToken, user())).toEqual({ result: 'refused' });
  });

  it('is refused when the new ID token is for a user of another issuer', async () => {
    const outcome = await refresher.refresh(await signIn(), user({ issuer: 'https://elsewhere.example.test' }));
    expect(outcome).toEqual({ result: 'refused' });
  });
});

describe('a refresh the provider cannot answer', () => {
  it('is unavailable while the provider is unreachable', async () => {
    const refreshToken = await signIn();
    provider.unreachable = true;
    expect(await refresher.refresh(refreshToken, user())).toEqual({ result: 'unavailable' });
    provider.unreachable = false;
    expect(await refresher.refresh(refreshToken, user())).toMatchObject({ result: 'refreshed' });
  });

  it('is unavailable while the provider metadata is not loaded', async () => {
    const log = createLogger('silent');
    const nowhere = new ProviderConnection(
      { metadataUrl: 'http://127.0.0.1:9/.well-known/openid-configuration', clientId, clientSecret, allowHttp: true },
      log,
    );
    await nowhere.whenAttempted();
    try {
      expect(await createTokenRefresher(nowhere, log, openRecheck).refresh('some-refresh-token', user())).toEqual({
        result: 'unavailable',
      });
    } finally {
      nowhere.close();
    }
  });
});

it('never writes a refresh token to the log', async () => {
  const refreshToken = await signIn();
  provider.fault = 'wrong-aud';
  await refresher.refresh(refreshToken, user());
  provider.fault = 'none';
  const rotated = await signIn();
  provider.revokeRefreshTokens();
  await refresher.refresh(rotated, user());

  const log = logs.join('');
  expect(log).toContain('token refresh refused');
  for (const token of [refreshToken, rotated]) expect(log).not.toContain(token);
});
