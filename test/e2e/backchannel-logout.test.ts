/**
 * OpenID Connect Back-Channel Logout 1.0: the provider's server posts a signed logout token, and
 * the gateway ends the sessions it names. Every check of section 2.6 has a token that breaks it.
 * https://openid.net/specs/openid-connect-backchannel-1_0.html
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import { BACKCHANNEL_LOGOUT_EVENT, type LogoutTokenOptions } from '../support/faulty-provider.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';

const FORM = 'application/x-www-form-urlencoded';
const SUBJECT = 'test-user-1';

let stack: FaultyStack;
let endpoint: string;
beforeAll(async () => {
  stack = await startFaultyStack();
  endpoint = `${stack.url}/v1/auth/backchannel-logout`;
});
afterAll(() => stack.close());
beforeEach(() => {
  stack.provider.subject = SUBJECT;
});

interface SignedIn {
  browser: Browserless;
  sid: string;
}

async function signedIn(subject = SUBJECT): Promise<SignedIn> {
  stack.provider.subject = subject;
  const browser = new Browserless();
  await signInForSession(stack, browser);
  return { browser, sid: stack.provider.lastSid! };
}

async function isSignedIn({ browser }: SignedIn): Promise<boolean> {
  const me = await browser.fetch(`${stack.url}/v1/auth/me`);
  await me.body?.cancel();
  return me.status === 200;
}

function postLogout(
  body: string | URLSearchParams | undefined,
  contentType: string | undefined = FORM,
): Promise<Response> {
  return fetch(endpoint, { method: 'POST', headers: contentType ? { 'content-type': contentType } : {}, body });
}

async function postToken(options: LogoutTokenOptions): Promise<Response> {
  const token = await stack.provider.signLogoutToken(options);
  return postLogout(new URLSearchParams({ logout_token: token }));
}

function epochSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** The audit lines the gateway logged for sign-outs, newest last. */
function signOutAudits(): Array<{ actor_email: string | null; detail: Record<string, unknown> }> {
  return stack.logs
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.includes('"audit: sign_out"'))
    .map(
      (line) => (JSON.parse(line) as { audit: { actor_email: string | null; detail: Record<string, unknown> } }).audit,
    );
}

async function expectRefused(response: Response, description?: RegExp): Promise<void> {
  expect(response.status).toBe(400);
  expect(response.headers.get('cache-control')).toBe('no-store');
  expect(response.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await response.json()) as { error: string; error_description: string };
  expect(body.error).toBe('invalid_request');
  expect(body.error_description).toEqual(expect.any(String));
  if (description) expect(body.error_description).toMatch(description);
}

describe('a valid logout token', () => {
  it('naming a sid ends only the session of that sign-in', async () => {
    const first = await signedIn();
    const second = await signedIn();
    expect(first.sid).not.toBe(second.sid);

    const response = await postToken({ sid: first.sid });
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(await isSignedIn(first)).toBe(false);
    expect(await isSignedIn(second)).toBe(true);
  });

  it('naming a sid and a sub ends that session only when both match', async () => {
    const session = await signedIn();
    expect((await postToken({ sid: session.sid, sub: 'someone-else' })).status).toBe(200);
    expect(await isSignedIn(session)).toBe(true);
    expect((await postToken({ sid: session.sid, sub: SUBJECT })).status).toBe(200);
    expect(await isSignedIn(session)).toBe(false);
  });

  it('naming only a sub ends every session of that user, and no one else’s', async () => {
    const first = await signedIn();
    const second = await signedIn();
    const otherUser = await signedIn('test-user-2');

    expect((await postToken({ sub: SUBJECT })).status).toBe(200);
    expect(await isSignedIn(first)).toBe(false);
    expect(await isSignedIn(second)).toBe(false);
    expect(await isSignedIn(otherUser)).toBe(true);
  });

  it('records a sign_out with reason backchannel in the audit log', async () => {
    await signedIn('audited-user');
    const before = signOutAudits().length;
    expect((await postToken({ sub: 'audited-user' })).status).toBe(200);
    const entries = signOutAudits().slice(before);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ actor_email: 'ada@example.test', detail: { reason: 'backchannel' } });
  });

  it('is answered 200 when no session matches', async () => {
    expect((await postToken({ sub: 'never-signed-in' })).status).toBe(200);
  });

  it('needs no cookie and passes no Origin check: the caller is the provider', async () => {
    const session = await signedIn();
    const token = await stack.provider.signLogoutToken({ sid: session.sid });
    const response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': FORM, origin: 'https://provider.example.test' },
      body: new URLSearchParams({ logout_token: token }),
    });
    expect(response.status).toBe(200);
    expect(await isSignedIn(session)).toBe(false);
  });
});

describe('refuses, with 400 and sessions intact, a logout token', () => {
  const now = epochSeconds;
  const cases: Array<[string, (sid: string) => LogoutTokenOptions, RegExp?]> = [
    ['signed by a key outside the JWKS', (sid) => ({ sid, signing: 'stray-key' }), /signature/],
    ['that is unsecured (alg none)', (sid) => ({ sid, signing: 'alg-none' }), /alg/],
    ['for another client (aud)', (sid) => ({ sid, extra: { aud: 'another-client' } }), /aud/],
    ['from another issuer (iss)', (sid) => ({ sid, extra: { iss: 'https://impostor.example.test' } }), /iss/],
    ['containing a nonce (an ID token, perhaps)', (sid) => ({ sid, extra: { nonce: 'n-0S6_WzA2Mj' } }), /nonce/],
    ['without events', (sid) => ({ sid, omit: ['events'] }), /events/],
    [
      'whose logout event is not an object',
      (sid) => ({ sid, extra: { events: { [BACKCHANNEL_LOGOUT_EVENT]: 'yes' } } }),
      /events/,
    ],
    ['whose events name another event', (sid) => ({ sid, extra: { events: { 'urn:example:other': {} } } })],
    ['whose events claim is an array', (sid) => ({ sid, extra: { events: [BACKCHANNEL_LOGOUT_EVENT] } })],
    ['naming neither sub nor sid', () => ({ omit: ['sub'] }), /neither sub nor sid/],
    ['that expired', (sid) => ({ sid, extra: { iat: now() - 600, exp: now() - 300 } }), /exp/],
    ['issued more than five minutes ago', (sid) => ({ sid, extra: { iat: now() - 400, exp: now() + 60 } }), /iat/],
    ['issued in the future', (sid) => ({ sid, extra: { iat: now() + 600, exp: now() + 900 } }), /iat/],
    ['without iat', (sid) => ({ sid, omit: ['iat'] }), /iat/],
    ['without jti', (sid) => ({ sid, omit: ['jti'] }), /jti/],
  ];

  it.each(cases)('%s', async (_name, options, description) => {
    const session = await signedIn();
    await expectRefused(await postToken({ sub: SUBJECT, ...options(session.sid) }), description);
    expect(await isSignedIn(session)).toBe(true);
  });

  it('seen before (the same jti), even for a session signed in since', async () => {
    const first = await signedIn();
    const token = await stack.provider.signLogoutToken({ sub: SUBJECT });
    expect((await postLogout(new URLSearchParams({ logout_token: token }))).status).toBe(200);
    expect(await isSignedIn(first)).toBe(false);

    const later = await signedIn();
    await expectRefused(await postLogout(new URLSearchParams({ logout_token: token })), /already used/);
    expect(await isSignedIn(later)).toBe(true);
  });

  it('tolerates 30 s of clock skew in iat', async () => {
    const session = await signedIn();
    expect((await postToken({ sid: session.sid, extra: { iat: now() + 20 } })).status).toBe(200);
    expect(await isSignedIn(session)).toBe(false);
  });
});

describe('refuses, with 400, a request that is not a form with one logout_token', () => {
  const bodies: Array<[string, () => Promise<Response>]> = [
    [
      'JSON',
      async () =>
        postLogout(
          JSON.stringify({ logout_token: await stack.provider.signLogoutToken({ sub: SUBJECT }) }),
          'application/json',
        ),
    ],
    ['plain text', async () => postLogout(await stack.provider.signLogoutToken({ sub: SUBJECT }), 'text/plain')],
    ['no content type', async () => postLogout(await stack.provider.signLogoutToken({ sub: SUBJECT }), undefined)],
    ['an empty form', () => postLogout('')],
    ['a form without logout_token', () => postLogout(new URLSearchParams({ token: 'x' }))],
    [
      'two logout_token fields',
      async () => {
        const form = new URLSearchParams();
        form.append('logout_token', await stack.provider.signLogoutToken({ sub: SUBJECT }));
        form.append('logout_token', await stack.provider.signLogoutToken({ sub: SUBJECT }));
        return postLogout(form);
      },
    ],
    ['a token that is not a JWT', () => postLogout(new URLSearchParams({ logout_token: 'not-a-jwt' }))],
    ['a body over 64 KiB', () => postLogout(new URLSearchParams({ logout_token: 'a'.repeat(70_000) }))],
  ];

  it.each(bodies)('%s', async (_name, send) => {
    const session = await signedIn();
    await expectRefused(await send());
    expect(await isSignedIn(session)).toBe(true);
  });
});
