/**
 * OpenID Connect Front-Channel Logout 1.0: a provider that can only tell its relying parties about
 * a sign-out from the browser loads `/v1/auth/frontchannel-logout?iss=…&sid=…` in an iframe, where
 * no session cookie arrives; the gateway ends the sessions of that provider session.
 * https://openid.net/specs/openid-connect-frontchannel-1_0.html
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';

let stack: FaultyStack;
beforeAll(async () => {
  stack = await startFaultyStack();
});
afterAll(() => stack.close());

async function signedIn(): Promise<{ browser: Browserless; sid: string }> {
  const browser = new Browserless();
  await signInForSession(stack, browser);
  return { browser, sid: stack.provider.lastSid! };
}

async function isSignedIn(browser: Browserless): Promise<boolean> {
  const me = await browser.fetch(`${stack.url}/v1/auth/me`);
  await me.body?.cancel();
  return me.status === 200;
}

/** What the provider's iframe asks for: no cookie of the gateway's (a third-party context). */
function frontchannel(query: string): Promise<Response> {
  return fetch(`${stack.url}/v1/auth/frontchannel-logout?${query}`);
}

function query(parameters: Record<string, string>): string {
  return new URLSearchParams(parameters).toString();
}

describe('front-channel logout', () => {
  it('ends the session of the provider session named by iss and sid, without its cookie', async () => {
    const person = await signedIn();
    const bystander = await signedIn();
    const response = await frontchannel(query({ iss: stack.provider.issuer, sid: person.sid }));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    expect(response.headers.get('cache-control')).toBe('no-cache, no-store');
    expect(response.headers.get('content-security-policy')).toContain(
      `frame-ancestors ${new URL(stack.provider.issuer).origin}`,
    );
    expect(await isSignedIn(person.browser)).toBe(false);
    expect(await isSignedIn(bystander.browser)).toBe(true);
    const audits = stack.logs
      .join('')
      .split('\n')
      .filter((line) => line.includes('"audit: sign_out"'));
    expect(audits.some((line) => line.includes('"reason":"frontchannel"'))).toBe(true);
  });

  it('refuses an iss that is not the gateway’s provider, and ends nothing', async () => {
    const person = await signedIn();
    const response = await frontchannel(query({ iss: 'https://impostor.example.test', sid: person.sid }));
    expect(response.status).toBe(400);
    expect(await isSignedIn(person.browser)).toBe(true);
  });

  it.each([
    ['no sid', (sid: string) => query({ iss: stack.provider.issuer, sid }).replace(/&sid=.*/, '')],
    ['no iss', (sid: string) => query({ sid })],
    ['an empty sid', () => query({ iss: stack.provider.issuer, sid: '' })],
    ['sid twice', (sid: string) => `${query({ iss: stack.provider.issuer, sid })}&sid=${sid}`],
    ['an overlong sid', (sid: string) => query({ iss: stack.provider.issuer, sid: sid + 'x'.repeat(600) })],
  ])('refuses a request with %s, and ends nothing', async (_case, build) => {
    const person = await signedIn();
    const response = await frontchannel(build(person.sid));
    expect(response.status).toBe(400);
    expect(await isSignedIn(person.browser)).toBe(true);
  });

  it('answers 200 for a sid with no session left, as the provider retries nothing', async () => {
    const response = await frontchannel(query({ iss: stack.provider.issuer, sid: 'already-gone' }));
    expect(response.status).toBe(200);
  });
});
