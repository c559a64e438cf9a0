import { expect } from 'vitest';
import type { Browserless } from './browserless.js';

export interface SignInHops {
  /** The gateway's answer to the provider's redirect back (302 to return_to when all went well). */
  callback: Response;
  callbackUrl: string;
  /** The authorization request the gateway sent the browser to. */
  authorizeUrl: URL;
}

/**
 * Runs login -> provider -> callback in `browser` against a provider that signs in without a
 * form (the faulty test provider), and returns the callback's answer unread.
 */
export async function signIn(
  stack: { url: string },
  browser: Browserless,
  returnTo = '/v1/models',
): Promise<SignInHops> {
  const login = await browser.fetch(`${stack.url}/v1/auth/login?return_to=${encodeURIComponent(returnTo)}`);
  expect(login.status).toBe(302);
  const authorizeUrl = new URL(login.headers.get('location')!);
  const authorize = await browser.fetch(authorizeUrl.href);
  expect(authorize.status).toBe(302);
  const callbackUrl = authorize.headers.get('location')!;
  const callback = await browser.fetch(callbackUrl);
  return { callback, callbackUrl, authorizeUrl };
}

/** Signs in and returns the session cookie's value, failing the test when there is none. */
export async function signInForSession(stack: { url: string }, browser: Browserless): Promise<string> {
  const { callback } = await signIn(stack, browser);
  expect(callback.status).toBe(302);
  const session = browser.cookie(stack.url, 'gatehouse_session');
  expect(session).toBeDefined();
  return session!;
}
