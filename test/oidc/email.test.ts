/**
 * The email a provider shares, or does not (issue 13, finding 6): a sign-in without one never
 * erases the stored address, `auth.require_email` refuses it with a page that says what to do, a
 * UserInfo outage is told apart from "no email", and a person without an email is shown by name.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfigFromObject } from '../../src/config/index.js';
import { Browserless } from '../support/browserless.js';
import { signIn } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';

async function me(stack: FaultyStack, browser: Browserless): Promise<Record<string, unknown>> {
  const response = await browser.fetch(`${stack.url}/v1/auth/me`);
  expect(response.status).toBe(200);
  return (await response.json()) as Record<string, unknown>;
}

describe('auth.require_email', () => {
  const minimal = { auth: { disable_auth: true }, gateway: { upstream: 'http://127.0.0.1:8000' } };
  const requireEmail = (auth: Record<string, unknown>) =>
    loadConfigFromObject({ ...minimal, auth: { ...minimal.auth, ...auth } }, 'email-test').auth.require_email;

  it('is on when an email rule is configured, off otherwise, unless set', () => {
    expect(requireEmail({})).toBe(false);
    expect(requireEmail({ allowed_email_domains: ['example.com'] })).toBe(true);
    expect(requireEmail({ google_whitelist: 'example.com' })).toBe(true);
    expect(requireEmail({ admin_emails: ['root@example.com'] })).toBe(true);
    expect(requireEmail({ admin_emails: ['root@example.com'], require_email: false })).toBe(false);
    expect(requireEmail({ require_email: true })).toBe(true);
  });
});

describe('a provider that sometimes shares no email', () => {
  let stack: FaultyStack;
  let strict: FaultyStack;
  beforeAll(async () => {
    [stack, strict] = await Promise.all([startFaultyStack(), startFaultyStack({ auth: { require_email: true } })]);
  });
  afterAll(async () => {
    await Promise.all([stack?.close(), strict?.close()]);
  });
  beforeEach(() => {
    for (const { provider } of [stack, strict]) {
      provider.extraClaims = {};
      provider.userinfoOnlyClaims = {};
      provider.userinfoFails = false;
    }
  });

  it('keeps the stored email when a later sign-in shares none', async () => {
    const first = new Browserless();
    expect((await signIn(stack, first)).callback.status).toBe(302);
    expect(await me(stack, first)).toMatchObject({ email: stack.provider.email });

    stack.provider.extraClaims = { email: undefined };
    const second = new Browserless();
    expect((await signIn(stack, second)).callback.status).toBe(302);
    expect(await me(stack, second)).toMatchObject({ email: stack.provider.email });
  });

  it('refuses a sign-in without an email under require_email, with a page saying what to do', async () => {
    strict.provider.extraClaims = { email: undefined };
    const browser = new Browserless();
    const { callback } = await signIn(strict, browser);
    const page = await callback.text();
    expect(callback.status).toBe(403);
    expect(page).toContain('Email address needed');
    expect(page).toContain('Ask the administrator to have the provider share it');
    expect(browser.cookie(strict.url, 'gatehouse_session')).toBeUndefined();
  });

  it('says UserInfo is unavailable, instead of "no email", when the email lives only there', async () => {
    strict.provider.extraClaims = { email: undefined };
    strict.provider.userinfoOnlyClaims = { email: 'ada@example.test' };
    strict.provider.userinfoFails = true;
    const { callback } = await signIn(strict, new Browserless());
    const page = await callback.text();
    expect(callback.status).toBe(503);
    expect(page).toContain('did not answer the request for your profile');
    expect(page).not.toContain('Email address needed');
    expect(strict.logs.join('')).toContain('USERINFO_UNAVAILABLE');

    strict.provider.userinfoFails = false;
    const browser = new Browserless();
    expect((await signIn(strict, browser)).callback.status).toBe(302);
    expect(await me(strict, browser)).toMatchObject({ email: 'ada@example.test' });
  });

  it('signs in on the ID token’s email when UserInfo fails, and logs the failure', async () => {
    stack.provider.userinfoFails = true;
    expect((await signIn(stack, new Browserless())).callback.status).toBe(302);
    expect(stack.logs.join('')).toContain('UserInfo failed; signing in with the ID token');
  });

  it('shows preferred_username where the provider shares neither email nor name', async () => {
    stack.provider.subject = 'no-email-user';
    stack.provider.extraClaims = { email: undefined, name: undefined, preferred_username: 'ada.l' };
    try {
      const browser = new Browserless();
      expect((await signIn(stack, browser)).callback.status).toBe(302);
      expect(await me(stack, browser)).toMatchObject({ sub: 'no-email-user', name: 'ada.l' });
      const account = await browser.fetch(`${stack.url}/v1/auth/account`);
      const page = await account.text();
      expect(page).toContain('<strong>ada.l</strong>');
      expect(page).not.toContain('<strong>no-email-user</strong>');
    } finally {
      stack.provider.subject = 'test-user-1';
    }
  });
});
