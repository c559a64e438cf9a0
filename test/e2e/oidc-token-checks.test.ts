import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import type { TokenFault } from '../support/faulty-provider.js';
import { CLIENT_SECRET, startFaultyStack, type FaultyStack } from '../support/stack.js';

let stack: FaultyStack;
beforeAll(async () => {
  stack = await startFaultyStack();
});
afterAll(() => stack.close());
beforeEach(() => {
  stack.provider.fault = 'none';
  stack.provider.codeError = undefined;
});

/** Runs login -> provider -> callback and returns the callback's answer. */
async function signIn(browser: Browserless, returnTo = '/v1/models') {
  const login = await browser.fetch(`${stack.url}/v1/auth/login?return_to=${encodeURIComponent(returnTo)}`);
  expect(login.status).toBe(302);
  const authorize = await browser.fetch(login.headers.get('location')!);
  expect(authorize.status).toBe(302);
  const callbackUrl = authorize.headers.get('location')!;
  const callback = await browser.fetch(callbackUrl);
  return { callback, callbackUrl, authorizeUrl: new URL(login.headers.get('location')!) };
}

describe('sign-in through a real provider', () => {
  it('signs in, lands on return_to and is identified by /v1/auth/me', async () => {
    const browser = new Browserless();
    const { callback } = await signIn(browser, '/v1/models?x=1');
    expect(callback.status).toBe(302);
    expect(callback.headers.get('location')).toBe('/v1/models?x=1');
    const me = await browser.fetch(`${stack.url}/v1/auth/me`);
    expect(me.status).toBe(200);
    expect(await me.json()).toEqual({ sub: 'test-user-1', email: expect.any(String), name: expect.any(String) });
  });

  it('sends state, nonce and a PKCE S256 challenge in the authorization request', async () => {
    const browser = new Browserless();
    const login = await browser.fetch(`${stack.url}/v1/auth/login`);
    const url = new URL(login.headers.get('location')!);
    expect(url.searchParams.get('state')).toMatch(/^[\w-]{20,}$/);
    expect(url.searchParams.get('nonce')).toMatch(/^[\w-]{20,}$/);
    expect(url.searchParams.get('code_challenge')).toMatch(/^[\w-]{43}$/);
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(url.searchParams.get('redirect_uri')).toBe(`${stack.url}/v1/auth/auth`);
    expect(url.searchParams.get('scope')).toBe('openid email profile');
  });

  it('sets the session cookie HttpOnly, SameSite=Lax, Path=/ and rotates it at each sign-in', async () => {
    const browser = new Browserless();
    const { callback } = await signIn(browser);
    const cookie = callback.headers.getSetCookie().find((line) => line.startsWith('gatehouse_session='))!;
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Lax/i);
    expect(cookie).toMatch(/Path=\//);
    const first = browser.cookie(stack.url, 'gatehouse_session');
    await signIn(browser);
    const second = browser.cookie(stack.url, 'gatehouse_session');
    expect(second).not.toBe(first);
    const stale = await fetch(`${stack.url}/v1/auth/me`, { headers: { cookie: `gatehouse_session=${first}` } });
    expect(stale.status).toBe(401);
  });

  it('accepts an ID token signed with a key the provider rotated in after the JWKS was cached', async () => {
    await signIn(new Browserless());
    const fetchedBefore = stack.provider.jwksRequests;
    stack.provider.fault = 'unknown-kid-then-rotate';
    const { callback } = await signIn(new Browserless());
    expect(callback.status).toBe(302);
    expect(stack.provider.jwksRequests).toBeGreaterThan(fetchedBefore);
  });
});

describe('ID token checks a Relying Party must make (OpenID Connect Core 3.1.3.7)', () => {
  const faults: TokenFault[] = [
    'wrong-iss',
    'wrong-aud',
    'expired',
    'iat-future',
    'bad-signature',
    'alg-none',
    'hs256-with-client-secret',
    'wrong-nonce',
    'missing-nonce',
    'wrong-azp',
  ];
  it.each(faults)('refuses a sign-in whose ID token has the fault %s', async (fault) => {
    stack.provider.fault = fault;
    const browser = new Browserless();
    const { callback } = await signIn(browser);
    expect(callback.status).toBe(400);
    expect(callback.headers.get('content-type')).toMatch(/text\/html/);
    const page = await callback.text();
    expect(page).toContain('Try signing in again');
    expect(browser.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(401);
  });
});

describe('the authorization response is bound to this browser', () => {
  it('refuses a callback whose state was changed', async () => {
    const browser = new Browserless();
    const login = await browser.fetch(`${stack.url}/v1/auth/login`);
    const authorize = await browser.fetch(login.headers.get('location')!);
    const callbackUrl = new URL(authorize.headers.get('location')!);
    callbackUrl.searchParams.set('state', 'forged-state-value-from-the-attacker');
    const callback = await browser.fetch(callbackUrl.href);
    expect(callback.status).toBe(400);
    expect(browser.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
  });

  it('refuses a callback arriving in a browser that did not start the sign-in (login CSRF)', async () => {
    const attacker = new Browserless();
    const login = await attacker.fetch(`${stack.url}/v1/auth/login`);
    const authorize = await attacker.fetch(login.headers.get('location')!);
    const victim = new Browserless();
    const callback = await victim.fetch(authorize.headers.get('location')!);
    expect(callback.status).toBe(400);
    expect(victim.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
  });

  it('refuses a replayed callback at the gateway, naming the unknown flow, without asking the provider again', async () => {
    const browser = new Browserless();
    const login = await browser.fetch(`${stack.url}/v1/auth/login`);
    const flowCookie = browser.cookie(stack.url, 'gatehouse_login')!;
    const { callback, callbackUrl } = await (async () => {
      const authorize = await browser.fetch(login.headers.get('location')!);
      const url = authorize.headers.get('location')!;
      return { callback: await browser.fetch(url), callbackUrl: url };
    })();
    expect(callback.status).toBe(302);
    const tokenRequestsBefore = stack.provider.tokenRequests.length;
    const replay = await fetch(callbackUrl, {
      headers: { cookie: `gatehouse_login=${flowCookie}` },
      redirect: 'manual',
    });
    // Refused by the gateway's one-time flow, before the code reaches the provider (which would
    // refuse a reused code by itself).
    expect(replay.status).toBe(400);
    expect(stack.provider.tokenRequests.length).toBe(tokenRequestsBefore);
    expect(await replay.text()).toContain('unknown sign-in flow');
    expect(
      replay.headers
        .getSetCookie()
        .some((line) => line.startsWith('gatehouse_session=') && !/Max-Age=0|Expires=Thu, 01 Jan 1970/i.test(line)),
    ).toBe(false);
  });

  it('shows a clear page when the provider denies access', async () => {
    stack.provider.fault = 'access-denied';
    const browser = new Browserless();
    const { callback } = await signIn(browser);
    expect(callback.status).toBe(403);
    const page = await callback.text();
    expect(page).toContain('You declined the sign-in');
    expect(page).toContain('Details: access_denied');
  });

  it('never writes the client secret, ID token or session id to the log', async () => {
    const browser = new Browserless();
    await signIn(browser);
    const session = browser.cookie(stack.url, 'gatehouse_session')!;
    const log = stack.logs.join('');
    expect(log).not.toContain(CLIENT_SECRET);
    expect(log).not.toContain(session);
    expect(stack.provider.lastIdToken).toBeDefined();
    expect(log).not.toContain(stack.provider.lastIdToken!.split('.')[2]);
  });
});

describe('RP-initiated logout', () => {
  it('sends a fresh state with every end-session redirect, which the provider hands back', async () => {
    const states: string[] = [];
    for (let i = 0; i < 2; i += 1) {
      const browser = new Browserless();
      await signIn(browser);
      const logout = await browser.fetch(`${stack.url}/v1/auth/logout`);
      const endSession = new URL(logout.headers.get('location')!);
      const state = endSession.searchParams.get('state');
      expect(state).toMatch(/^[\w-]{20,}$/);
      states.push(state!);
      const back = await browser.fetch(endSession.href);
      expect(new URL(back.headers.get('location')!).searchParams.get('state')).toBe(state);
    }
    expect(states[0]).not.toBe(states[1]);
    expect(stack.provider.logoutRequests.at(-1)?.state).toBe(states[1]);
  });
});

describe('what a person is told when the provider refuses', () => {
  it.each([
    ['consent_required', 'You declined to let this service see your account'],
    ['access_denied', 'You declined the sign-in'],
    ['login_required', 'needs you to sign in again'],
    ['interaction_required', 'needs you to finish a step on its page'],
    ['account_selection_required', 'needs you to finish a step on its page'],
    ['made_up_error_<b>', 'The sign-in provider reported an error'],
  ])('maps %s on the callback to a plain message, the raw code only in the details', async (code, message) => {
    const response = await fetch(`${stack.url}/v1/auth/auth?error=${encodeURIComponent(code)}`);
    const page = await response.text();
    expect(response.status).toBe(403);
    expect(page).toContain(message);
    expect(page).toContain(`Details: ${code.replace('<', '&lt;').replace('>', '&gt;')}`);
    expect(page.split(code.replace('<', '&lt;').replace('>', '&gt;')).length).toBe(2);
  });

  it.each([
    ['invalid_grant', 400],
    ['invalid_code', 403],
  ])(
    'says "Sign-in expired, try again" when the token endpoint answers %s (glewlwyd says invalid_code)',
    async (error, status) => {
      stack.provider.codeError = { status, error };
      const { callback } = await signIn(new Browserless());
      const page = await callback.text();
      expect(callback.status).toBe(400);
      expect(page).toContain('Sign-in expired, try again');
      expect(page).toContain(`Details: ${error}`);
    },
  );
});
