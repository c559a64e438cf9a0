/**
 * The admin console at /v1/auth/admin in a real Chromium, against the real gateway, the bundled
 * oidc-provider and the sample platform: an administrator signs in on the provider's form, sees
 * every user and key, disables and enables a user, revokes someone else's key, and reads, filters
 * and exports the audit log. Confirm dialogs, the CSP and what a key can do afterwards are checked
 * where a person would meet them.
 *
 * A second user comes from the `gatehouse keys create` code path on the same SQLite file, as an
 * operator would create a key for someone who never signed in. The tests run in order and build on
 * each other's changes, as one admin session does.
 */
import { join } from 'node:path';
import type { BrowserContext, Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSignedInOnDemoForm } from '../support/browser.js';
import { SCREENSHOTS_DIR, startPagesStack, type PagesStack } from '../support/browser-stack.js';
import { hasChromium, requireResource } from '../support/requirements.js';
import { DEMO_USER, type DemoStack } from '../support/stack.js';

const available = await requireResource('chromium', hasChromium(), 'apt-get install chromium');

const TEST_TIMEOUT_MS = 30_000;
const ADMIN_PATH = '/v1/auth/admin';
const OTHER_USER = { email: 'bob@example.com', keyName: 'bob-batch-jobs' };

interface OpenAiError {
  error: { code: string | null; message: string };
}

interface ExportedEvent {
  event: string;
  actor_email: string | null;
  target: string | null;
}

describe.skipIf(!available)('the admin console in a real browser', () => {
  let pages: PagesStack;
  let stack: DemoStack;
  let context: BrowserContext;
  let page: Page;
  /** Console errors, warnings and CSP violations on the admin's page, from sign-in on. */
  let problems: string[];
  let otherUsersKey: string;

  beforeAll(async () => {
    pages = await startPagesStack('admin-browser', { width: 1280, height: 900 });
    ({ stack, context, page, problems } = pages);
    otherUsersKey = await pages.createKeyByCli({ email: OTHER_USER.email, name: OTHER_USER.keyName });
  });

  afterAll(() => pages?.close());

  function screenshot(name: string): Promise<Buffer> {
    return page.screenshot({ path: join(SCREENSHOTS_DIR, `admin-${name}.png`), fullPage: true });
  }

  function userRow(email: string) {
    return page.locator('tr[data-user-id]').filter({ hasText: email });
  }

  /** The State column's badge: "active" or "disabled". */
  function userState(email: string): Promise<string | null> {
    return userRow(email).locator('td.state .badge').textContent();
  }

  function keyRowOf(ownerEmail: string) {
    return page.locator('tr[data-key-id]').filter({ has: page.locator('td:first-child', { hasText: ownerEmail }) });
  }

  function auditEvents(): Promise<string[]> {
    return page.locator('table.audit tbody tr td:nth-child(2) code').allTextContents();
  }

  /** A program's call with the other user's key, from Node, not from the browser. */
  function callWithOtherUsersKey(): Promise<Response> {
    return fetch(`${stack.url}/v1/models`, { headers: { authorization: `Bearer ${otherUsersKey}` } });
  }

  async function expectRefused(response: Response, status: number, code: string): Promise<void> {
    const text = await response.text();
    expect(response.status, text).toBe(status);
    expect((JSON.parse(text) as OpenAiError).error.code).toBe(code);
  }

  /** Clicks a form's button and answers its confirm dialog; returns the dialog's text. */
  async function clickAndAnswerConfirm(button: Locator, accept: boolean): Promise<string> {
    let message = '';
    page.once('dialog', (dialog) => {
      message = dialog.message();
      void (accept ? dialog.accept() : dialog.dismiss());
    });
    await button.click();
    await expect.poll(() => message).not.toBe('');
    return message;
  }

  it(
    'signs the administrator in on the provider form and lists every user, the admin marked as such and as "you"',
    async () => {
      const target = `${stack.url}${ADMIN_PATH}`;
      await openSignedInOnDemoForm(page, target, stack.provider.issuer);

      await expect(page.locator('h1').textContent()).resolves.toBe('Admin');
      const admin = userRow(DEMO_USER.email);
      await expect(admin.locator('.badge.admin').textContent()).resolves.toBe('admin');
      await expect(admin.locator('td:last-child').innerText()).resolves.toBe('you');
      await expect(admin.getByRole('button').count()).resolves.toBe(0);

      const other = userRow(OTHER_USER.email);
      await expect(other.locator('td:nth-child(2) .badge').textContent()).resolves.toBe('user');
      await expect(userState(OTHER_USER.email)).resolves.toBe('active');
      await expect(other.getByRole('button', { name: 'Disable' }).count()).resolves.toBe(1);
      await expect(keyRowOf(OTHER_USER.email).locator('td:nth-child(2)').textContent()).resolves.toBe(
        OTHER_USER.keyName,
      );
      await screenshot('console');
    },
    TEST_TIMEOUT_MS,
  );

  it('keeps the console from anyone who is not an administrator', async () => {
    const response = await fetch(`${stack.url}${ADMIN_PATH}`, {
      headers: { authorization: `Bearer ${otherUsersKey}` },
    });
    await expectRefused(response, 403, 'admin_required');
  });

  it(
    'disables a user only once the confirm dialog is accepted, and their key is refused at once',
    async () => {
      expect((await callWithOtherUsersKey()).status).toBe(200);
      const disable = userRow(OTHER_USER.email).getByRole('button', { name: 'Disable' });

      const message = await clickAndAnswerConfirm(disable, false);
      // Soft: the wording is checked, but a flaw in it must not stop the disabling checked below.
      expect.soft(message).toBe(`Disable ${OTHER_USER.email}? Their sessions end and their keys stop working at once.`);
      await page.goto(`${stack.url}${ADMIN_PATH}`);
      await expect(userState(OTHER_USER.email)).resolves.toBe('active');

      await clickAndAnswerConfirm(disable, true);
      // Polled: the form posts, then the 303 brings back the same URL, so there is no URL to wait for.
      await expect.poll(() => userState(OTHER_USER.email)).toBe('disabled');
      await expect(userRow(OTHER_USER.email).getByRole('button', { name: 'Enable' }).count()).resolves.toBe(1);
      await screenshot('user-disabled');

      await expectRefused(await callWithOtherUsersKey(), 403, 'account_disabled');
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'enables the user again, and their key works at once',
    async () => {
      await userRow(OTHER_USER.email).getByRole('button', { name: 'Enable' }).click();
      await expect.poll(() => userState(OTHER_USER.email)).toBe('active');

      const response = await callWithOtherUsersKey();
      expect(response.status, await response.text()).toBe(200);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'revokes another user’s key from the keys table, after the confirm dialog, with a 401 at once',
    async () => {
      const row = keyRowOf(OTHER_USER.email);
      const message = await clickAndAnswerConfirm(row.getByRole('button', { name: 'Revoke' }), true);
      expect.soft(message).toBe(`Revoke “${OTHER_USER.keyName}” of ${OTHER_USER.email}?`);
      await expect.poll(() => keyRowOf(OTHER_USER.email).locator('.badge').textContent()).toBe('revoked');
      await expect(keyRowOf(OTHER_USER.email).getByRole('button', { name: 'Revoke' }).count()).resolves.toBe(0);
      await screenshot('key-revoked');

      await expectRefused(await callWithOtherUsersKey(), 401, 'revoked_api_key');
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'records each action in the audit log, and filters it by event from the form',
    async () => {
      await page.goto(`${stack.url}${ADMIN_PATH}`);
      const events = await auditEvents();
      expect(events).toEqual(expect.arrayContaining(['user_disabled', 'user_enabled', 'key_revoked', 'sign_in']));
      const disabled = page.locator('table.audit tbody tr').filter({ hasText: 'user_disabled' });
      await expect(disabled.locator('td:nth-child(3)').textContent()).resolves.toBe(DEMO_USER.email);
      await expect(disabled.locator('td:nth-child(4)').textContent()).resolves.toBe(OTHER_USER.email);

      await page.selectOption('select[name="event"]', 'user_disabled');
      await page.getByRole('button', { name: 'Filter' }).click();
      await page.waitForURL((url) => url.searchParams.get('event') === 'user_disabled');

      expect(await auditEvents()).toEqual(['user_disabled']);
      await expect(page.locator('select[name="event"]').inputValue()).resolves.toBe('user_disabled');
      await screenshot('audit-filtered');
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'exports the audit log as JSON lines, filtered like the table beside the link',
    async () => {
      const exported = async (): Promise<ExportedEvent[]> => {
        const href = await page.getByRole('link', { name: 'Export JSON lines' }).getAttribute('href');
        const response = await context.request.get(new URL(href!, stack.url).href);
        expect(response.status()).toBe(200);
        expect(response.headers()['content-type']).toMatch(/^application\/x-ndjson/);
        const text = await response.text();
        expect(text.endsWith('\n')).toBe(true);
        return text
          .trimEnd()
          .split('\n')
          .map((line) => JSON.parse(line) as ExportedEvent);
      };

      await page.goto(`${stack.url}${ADMIN_PATH}`);
      const everything = await exported();
      expect(everything.map((entry) => entry.event)).toEqual(
        expect.arrayContaining(['user_disabled', 'user_enabled', 'key_revoked']),
      );
      expect(everything.find((entry) => entry.event === 'user_disabled')).toMatchObject({
        actor_email: DEMO_USER.email,
        target: OTHER_USER.email,
      });

      await page.goto(`${stack.url}${ADMIN_PATH}?event=user_disabled`);
      const filtered = await exported();
      expect(filtered.map((entry) => entry.event)).toEqual(['user_disabled']);
    },
    TEST_TIMEOUT_MS,
  );

  it('raised no console errors or CSP violations on any of these pages, under a CSP without unsafe-inline', async () => {
    const response = await page.goto(`${stack.url}${ADMIN_PATH}`);
    const policy = response?.headers()['content-security-policy'] ?? '';
    expect(policy).toMatch(/script-src 'self'/);
    expect(policy).not.toContain('unsafe-inline');

    expect(problems).toEqual([]);
  });
});
