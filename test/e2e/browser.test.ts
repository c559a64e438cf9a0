/**
 * A real Chromium against the real gateway, the bundled oidc-provider and the sample platform:
 * what a person does (sign in, manage keys, sign out) and what the browser enforces (CSP, clipboard,
 * confirm dialogs), which `app.inject()` tests cannot see.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectConsoleProblems, launchChromium, reportCspViolations } from '../support/browser.js';
import { hasChromium, requireResource } from '../support/requirements.js';
import { DEMO_USER, startDemoStack, type DemoStack } from '../support/stack.js';

const available = await requireResource('chromium', hasChromium(), 'apt-get install chromium');

const TEST_TIMEOUT_MS = 30_000;
const SCREENSHOTS_DIR = join('test-results', 'screenshots');
const SESSION_COOKIE = 'gatehouse_session';
const ACCOUNT_PATH = '/v1/auth/account';
const WRONG_PASSWORD_MESSAGE = 'That email and password do not match a demo account.';

interface OpenAiError {
  error: { code: string | null; message: string };
}

describe.skipIf(!available)('the gateway in a real browser', () => {
  let stack: DemoStack;
  let browser: Browser;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    await mkdir(SCREENSHOTS_DIR, { recursive: true });
    [stack, browser] = await Promise.all([startDemoStack(), launchChromium()]);
  });

  afterAll(async () => {
    await Promise.all(contexts.map((context) => context.close()));
    await browser?.close();
    await stack?.close();
  });

  /** A fresh context: no cookies, no provider session, nothing shared with other tests. */
  async function freshPage(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
    contexts.push(context);
    return { context, page: await context.newPage() };
  }

  function isProviderLogin(url: string): boolean {
    return url.startsWith(`${stack.provider.issuer}/interaction/`);
  }

  /** Fills the demo provider's form; the page must already be on it. */
  async function submitLoginForm(page: Page, password = DEMO_USER.password): Promise<void> {
    await page.fill('input[name="email"]', DEMO_USER.email);
    await page.fill('input[name="password"]', password);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  /** Opens `path` on the gateway, signs in on the provider's form, and waits to be back on `path`. */
  async function openSignedIn(page: Page, path: string): Promise<void> {
    const target = `${stack.url}${path}`;
    await page.goto(target);
    await page.waitForURL((url) => isProviderLogin(url.href));
    await submitLoginForm(page);
    await page.waitForURL(target);
  }

  async function sessionCookie(context: BrowserContext): Promise<string | undefined> {
    const cookies = await context.cookies(stack.url);
    return cookies.find((cookie) => cookie.name === SESSION_COOKIE)?.value;
  }

  /** Creates a key on the account page and returns the secret shown once. */
  async function createKey(page: Page, name: string): Promise<string> {
    await page.fill('form.create input[name="name"]', name);
    await page.getByRole('button', { name: 'Create key' }).click();
    await page.waitForSelector('#new-key-value');
    return page.inputValue('#new-key-value');
  }

  function keyRow(page: Page, name: string) {
    return page.locator('tr[data-key-id]').filter({ has: page.locator('td:first-child', { hasText: name }) });
  }

  /** A program's call with an API key, from Node, not from the browser. */
  function chatWithKey(key: string): Promise<Response> {
    return fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo-small', messages: [{ role: 'user', content: 'hello' }] }),
    });
  }

  it(
    'signs in on the provider form and lands on exactly the page first asked for',
    async () => {
      const { context, page } = await freshPage();
      const target = `${stack.url}/v1/models?limit=2`;
      await page.goto(target);
      await page.waitForURL((url) => isProviderLogin(url.href));
      await expect(page.locator('h1').textContent()).resolves.toBe('Gatehouse demo sign-in');
      await page.screenshot({ path: join(SCREENSHOTS_DIR, 'login-form.png'), fullPage: true });

      await submitLoginForm(page);
      await page.waitForURL(target);

      expect(page.url()).toBe(target);
      expect(await page.textContent('body')).toContain('demo-small');
      expect(await sessionCookie(context)).toBeDefined();
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "fits the demo provider's sign-in form on a 390 px phone without sideways scrolling",
    async () => {
      const { page } = await freshPage();
      await page.setViewportSize({ width: 390, height: 844 });
      await page.goto(`${stack.url}/v1/auth/account`);
      await page.waitForURL((url) => isProviderLogin(url.href));
      expect(await page.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'shows the provider error for a wrong password and sets no gateway session',
    async () => {
      const { context, page } = await freshPage();
      await page.goto(`${stack.url}/v1/models`);
      await page.waitForURL((url) => isProviderLogin(url.href));

      await submitLoginForm(page, 'not-the-password');
      await page.waitForLoadState();

      expect(page.url().startsWith(stack.provider.issuer)).toBe(true);
      await expect(page.getByRole('alert').textContent()).resolves.toBe(WRONG_PASSWORD_MESSAGE);
      expect(await sessionCookie(context)).toBeUndefined();
      const me = await context.request.get(`${stack.url}/v1/auth/me`);
      expect(me.status()).toBe(401);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'creates a key shown once, copies it, lists only its stub, and revokes it only when confirmed',
    async () => {
      const { context, page } = await freshPage();
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: stack.url });
      await openSignedIn(page, ACCOUNT_PATH);

      const header = await page.textContent('header.top');
      expect(header).toContain(DEMO_USER.name);
      expect(header).toContain(DEMO_USER.email);
      await expect(page.locator('p.empty').textContent()).resolves.toBe('You have no API keys yet.');

      const key = await createKey(page, 'notebook');
      expect(key).toMatch(/^\S{20,}$/);
      await expect(page.locator('#copy-key').textContent()).resolves.toBe('Copy');
      await page.click('#copy-key');
      await expect.poll(() => page.locator('#copy-key').textContent()).toBe('Copied');
      // Page code as strings: this project compiles without the DOM library.
      expect(await page.evaluate<string>('navigator.clipboard.readText()')).toBe(key);
      await page.screenshot({ path: join(SCREENSHOTS_DIR, 'account-with-new-key.png'), fullPage: true });

      // A fresh GET, not page.reload(): reloading the POST answer would resubmit the form.
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      expect(await page.content()).not.toContain(key);
      await expect(page.locator('#new-key-value').count()).resolves.toBe(0);
      const notebook = keyRow(page, 'notebook');
      const stub = (await notebook.locator('code').textContent())!;
      expect(stub.endsWith(key.slice(-4))).toBe(true);
      expect(key.startsWith(stub.split('…')[0]!)).toBe(true);
      await expect(notebook.locator('.badge').textContent()).resolves.toBe('active');

      expect((await chatWithKey(key)).status).toBe(200);

      const spare = await createKey(page, 'spare');
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);

      page.once('dialog', (dialog) => void dialog.accept());
      await notebook.getByRole('button', { name: 'Revoke' }).click();
      // Polled: the form posts, then the 303 brings back the same URL, so there is no URL to wait for.
      await expect.poll(() => keyRow(page, 'notebook').locator('.badge').textContent()).toBe('revoked');
      await expect(keyRow(page, 'notebook').getByRole('button', { name: 'Revoke' }).count()).resolves.toBe(0);
      await page.screenshot({ path: join(SCREENSHOTS_DIR, 'account-after-revoke.png'), fullPage: true });

      const refused = await chatWithKey(key);
      expect(refused.status).toBe(401);
      expect(((await refused.json()) as OpenAiError).error.code).toBe('revoked_api_key');

      let dialogMessage = '';
      page.once('dialog', (dialog) => {
        dialogMessage = dialog.message();
        void dialog.dismiss();
      });
      await keyRow(page, 'spare').getByRole('button', { name: 'Revoke' }).click();
      await expect.poll(() => dialogMessage).toContain('spare');
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      await expect(keyRow(page, 'spare').locator('.badge').textContent()).resolves.toBe('active');
      expect((await chatWithKey(spare)).status).toBe(200);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'serves the account page under a CSP without unsafe-inline and raises no console errors',
    async () => {
      const { context, page } = await freshPage();
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: stack.url });
      const problems = collectConsoleProblems(page);
      await reportCspViolations(page);

      await openSignedIn(page, ACCOUNT_PATH);
      const response = await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      const policy = response?.headers()['content-security-policy'] ?? '';
      expect(policy).toMatch(/script-src 'self'/);
      expect(policy).toMatch(/style-src 'self'/);
      expect(policy).not.toContain('unsafe-inline');
      expect(policy).not.toContain('unsafe-eval');

      // The script and stylesheet must actually apply under that policy.
      await createKey(page, 'csp-check');
      await page.click('#copy-key');
      await expect.poll(() => page.locator('#copy-key').textContent()).toBe('Copied');
      const cardBackground = await page.evaluate<string>(
        "getComputedStyle(document.querySelector('main.card')).backgroundColor",
      );
      expect(cardBackground).toBe('rgb(255, 255, 255)');

      expect(problems).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'signs out to a "You are signed out" page of its own, once, whose button signs in again on the provider form',
    async () => {
      const { context, page } = await freshPage();
      await openSignedIn(page, ACCOUNT_PATH);
      expect(await sessionCookie(context)).toBeDefined();

      const problems = collectConsoleProblems(page);

      await page.getByRole('link', { name: 'Sign out' }).click();
      // The gateway redirects to the provider's end_session_endpoint, the provider ends its session
      // and returns to the website root, which needs a session: instead of the provider's form the
      // person first sees that signing out worked. When the browser stops on the way (an error
      // status, a CSP form-action that forbids the redirect), `problems` says why.
      await expect
        .poll(() => ({ url: page.url().split('?')[0], problems }), { timeout: 10_000 })
        .toEqual({ url: `${stack.url}/v1/auth/signed-out`, problems: [] });
      await expect(page.locator('h1').textContent()).resolves.toBe('You are signed out');

      await page.getByRole('link', { name: 'Sign in again' }).click();
      await page.waitForURL((url) => isProviderLogin(url.href));
      // Once: the marker is gone, so the next page that needs a session goes to sign in straight away.
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      await page.waitForURL((url) => isProviderLogin(url.href));

      expect(await sessionCookie(context)).toBeUndefined();
      const me = await context.request.get(`${stack.url}/v1/auth/me`);
      expect(me.status()).toBe(401);
    },
    TEST_TIMEOUT_MS,
  );
});
