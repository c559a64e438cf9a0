/**
 * Without SCIM, `auth.recheck_minutes` is how a person removed at the provider loses access: their
 * next refresh is refused (`invalid_grant`), which ends the session and must stop their API keys
 * too, until the provider lets them sign in again.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import { createKey } from '../support/keys.js';
import { signIn, signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';
import { msUntil } from '../support/wait.js';

/** Short enough that each request after sign-in is inside the refresh window. */
const SHORT_TTL_SECONDS = 2;
const BOSS = 'boss@example.test';

describe('a user the provider refuses at a refresh', () => {
  let stack: FaultyStack;

  beforeAll(async () => {
    stack = await startFaultyStack({ auth: { admin_emails: [BOSS] } });
  });
  afterAll(() => stack.close());
  beforeEach(() => {
    Object.assign(stack.provider, { issueRefreshTokens: true, idTokenLifetimeSeconds: SHORT_TTL_SECONDS });
  });

  const withKey = (key: string) =>
    fetch(`${stack.url}/echo/recheck`, { headers: { authorization: `Bearer ${key}` } }).then(async (response) => ({
      status: response.status,
      body: await response.text(),
    }));
  const me = (browser: Browserless) => browser.fetch(`${stack.url}/v1/auth/me`).then((response) => response.status);

  it('loses the session and their keys, with an audit entry, and gets them back by signing in again', async () => {
    Object.assign(stack.provider, { subject: 'removed-1', email: 'removed@example.test' });
    const browser = new Browserless();
    await signInForSession(stack, browser);
    const { key } = await createKey(stack, browser, { name: 'outlives its owner?' });
    expect((await withKey(key)).status).toBe(200);

    stack.provider.revokeRefreshTokens();
    expect(await me(browser)).toBe(401);
    const refused = await msUntil(async () => (await withKey(key)).status === 403, Date.now());
    console.info(`key refused ${refused} ms after the refused refresh`);
    expect(refused).toBeLessThan(1_000);
    expect((await withKey(key)).body).toContain('account_disabled');
    const audit = stack.logs
      .join('')
      .split('\n')
      .find((line) => line.includes('"audit: user_disabled"'));
    expect(audit).toContain('"reason":"provider_refused"');

    // Signing in is the provider saying it accepts them after all.
    const again = new Browserless();
    await signInForSession(stack, again);
    expect(await msUntil(async () => (await withKey(key)).status === 200, Date.now())).toBeLessThan(1_000);
  });

  it('never undoes an administrator’s disable at sign-in', async () => {
    Object.assign(stack.provider, { subject: 'boss-1', email: BOSS });
    const boss = new Browserless();
    await signInForSession(stack, boss);
    Object.assign(stack.provider, { subject: 'kept-out-1', email: 'kept-out@example.test' });
    await signInForSession(stack, new Browserless());
    const users = (await (await boss.fetch(`${stack.url}/v1/auth/admin/users`)).json()) as {
      data: Array<{ id: string; email: string }>;
    };
    const target = users.data.find((user) => user.email === 'kept-out@example.test')!;
    const disabled = await boss.fetch(`${stack.url}/v1/auth/admin/users/${target.id}/disable`, {
      method: 'POST',
      headers: { origin: stack.url },
    });
    expect(disabled.status).toBe(200);
    const { callback } = await signIn(stack, new Browserless());
    expect(callback.status).toBe(403);
  });
});
