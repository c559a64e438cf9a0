/**
 * The key controls on the account page in a real Chromium, against the real gateway, the bundled
 * oidc-provider and the sample platform: a person creates a key limited to inference, two models
 * and 10 requests a minute with the form's checkboxes and fields, a program uses it, the usage
 * table and chart show that use, the key is rotated with its button, and a key about to expire is
 * flagged. The tests run in order and build on each other, as one visit to the page does.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  collectConsoleProblems,
  launchChromium,
  reportCspViolations,
  openSignedInOnDemoForm,
} from '../support/browser.js';
import { hasChromium, requireResource } from '../support/requirements.js';
import { startDemoStack, type DemoStack } from '../support/stack.js';
import type { UsageRow } from '../../src/usage/recorder.js';

const available = await requireResource('chromium', hasChromium(), 'apt-get install chromium');

const TEST_TIMEOUT_MS = 30_000;
const SCREENSHOTS_DIR = join('test-results', 'screenshots');
const ACCOUNT_PATH = '/v1/auth/account';
const KEY_NAME = 'notebook-inference';
const KEY_SHAPE = /^gth_[0-9A-Za-z]{36}$/;
/** The bar colour of a day with requests in the usage chart. */
const USED_DAY_FILL = '#2f5bea';

describe.skipIf(!available)('API key controls on the account page in a real browser', () => {
  let stack: DemoStack;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  /** Console errors, warnings and CSP violations on the page, from sign-in on. */
  let problems: string[];
  let keyId: string;
  let secret: string;

  beforeAll(async () => {
    await mkdir(SCREENSHOTS_DIR, { recursive: true });
    [stack, browser] = await Promise.all([startDemoStack(), launchChromium()]);
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    problems = collectConsoleProblems(page);
    await reportCspViolations(page);
  });

  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await stack?.close();
  });

  function keyRows(name: string): Locator {
    return page.locator('tr[data-key-id]').filter({ has: page.locator('td:first-child', { hasText: name }) });
  }

  function callWithKey(key: string, path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(`${stack.url}${path}`, { ...init, headers: { ...init.headers, authorization: `Bearer ${key}` } });
  }

  function chat(key: string, model: string, content: string, stream: boolean): Promise<Response> {
    return callWithKey(key, '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, stream, messages: [{ role: 'user', content }] }),
    });
  }

  /** Clicks a form's button, accepts its confirm dialog and returns the dialog's text. */
  async function clickAndAccept(button: Locator): Promise<string> {
    let message = '';
    page.once('dialog', (dialog) => {
      message = dialog.message();
      void dialog.accept();
    });
    await button.click();
    await expect.poll(() => message).not.toBe('');
    return message;
  }

  /** The secret the page shows once, after it has been rendered. */
  async function shownSecret(): Promise<string> {
    const field = page.locator('#new-key-value');
    await field.waitFor();
    return field.inputValue();
  }

  it(
    'creates a key with the inference scope, two models and 10 requests a minute from the form, shown in the table',
    async () => {
      const account = `${stack.url}${ACCOUNT_PATH}`;
      await openSignedInOnDemoForm(page, account, stack.provider.issuer);

      const form = page.locator('form.create');
      await form.locator('input[name="name"]').fill(KEY_NAME);
      await form.getByLabel('inference').check();
      await form.getByLabel('Models').fill('demo-small, demo-large');
      await form.getByLabel('Requests/min').fill('10');
      await form.getByRole('button', { name: 'Create key' }).click();

      secret = await shownSecret();
      expect(secret).toMatch(KEY_SHAPE);
      const row = keyRows(KEY_NAME);
      await expect(row.count()).resolves.toBe(1);
      keyId = (await row.getAttribute('data-key-id'))!;
      const allows = await row.locator('td:nth-child(3)').innerText();
      expect(allows).toContain('inference');
      expect(allows).not.toContain('training');
      expect(allows).toContain('models: demo-small, demo-large');
      expect(allows).toContain('10 req/min');
      await expect(row.locator('.badge').textContent()).resolves.toBe('active');
    },
    TEST_TIMEOUT_MS,
  );

  it('gives the key exactly those controls', async () => {
    expect((await chat(secret, 'demo-small', 'scope check', false)).status).toBe(200);
    const refused = await callWithKey(secret, '/v1/fine_tuning/jobs', { method: 'POST' });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('insufficient_scope');
    const wrongModel = await chat(secret, 'demo-huge', 'model check', false);
    expect(wrongModel.status).toBe(403);
    await wrongModel.body?.cancel();
    const models = await callWithKey(secret, '/v1/models');
    expect(models.headers.get('x-ratelimit-limit-requests')).toBe('10');
    const listed = (await models.json()) as { data: Array<{ id: string }> };
    expect(listed.data.map((model) => model.id)).toEqual(['demo-small', 'demo-large']);
  });

  it(
    'shows the use of the key in the usage table and the chart once usage is written',
    async () => {
      const streamed = await chat(secret, 'demo-small', 'hello browser', true);
      expect(streamed.status).toBe(200);
      expect(await streamed.text()).toMatch(/data: \[DONE\]\n\n$/);
      expect((await chat(secret, 'demo-large', 'one two three', false)).status).toBe(200);
      // With the test before: four answered requests, whose tokens are "scope check" 2 + 4,
      // "hello browser" 2 + 4 and "one two three" 3 + 5 (the model list has none).
      let row: UsageRow | undefined;
      const usageRow = async () => {
        const usage = (await (await callWithKey(secret, '/v1/auth/usage')).json()) as { data: UsageRow[] };
        return (row = usage.data.find((entry) => entry.key_id === keyId));
      };
      await expect
        .poll(usageRow, { interval: 100, timeout: 3_000 })
        .toMatchObject({ prompt_tokens: 7, completion_tokens: 13, status_2xx: 4 });
      const { requests, status_4xx: clientErrors, status_5xx: serverErrors } = row!;

      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      const cells = await page.locator(`tr[data-usage-key="${keyId}"] td`).allInnerTexts();
      expect(cells).toEqual([KEY_NAME, String(requests), '7', '13', String(clientErrors + serverErrors)]);

      const today = new Date().toISOString().slice(0, 10);
      const bars = page.locator('svg.chart rect');
      await expect(bars.count()).resolves.toBe(30);
      const todaysBar = bars.last();
      await expect(todaysBar.locator('title').textContent()).resolves.toBe(`${today}: ${requests} requests`);
      await expect(todaysBar.getAttribute('fill')).resolves.toBe(USED_DAY_FILL);
      await expect(todaysBar.getAttribute('height')).resolves.toBe('60');
      await expect(page.locator(`svg.chart rect[fill="${USED_DAY_FILL}"]`).count()).resolves.toBe(1);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'rotates the key with its Rotate button after the confirm dialog: a new secret, shown once, with the same controls',
    async () => {
      const message = await clickAndAccept(keyRows(KEY_NAME).getByRole('button', { name: 'Rotate' }));
      expect(message).toContain(KEY_NAME);
      expect(message).toMatch(/one hour/);

      await expect.poll(() => page.locator('#new-key-value').count()).toBe(1);
      const rotated = await shownSecret();
      expect(rotated).toMatch(KEY_SHAPE);
      expect(rotated).not.toBe(secret);
      await expect(page.locator('#new-key').innerText()).resolves.toContain(KEY_NAME);

      const rows = keyRows(KEY_NAME);
      await expect(rows.count()).resolves.toBe(2);
      const oldRow = page.locator(`tr[data-key-id="${keyId}"]`);
      const newRow = page.locator(`tr[data-key-id]:not([data-key-id="${keyId}"])`).filter({ hasText: KEY_NAME });
      for (const allows of await rows.locator('td:nth-child(3)').allInnerTexts()) {
        expect(allows).toContain('models: demo-small, demo-large');
        expect(allows).toContain('10 req/min');
      }
      await expect(newRow.locator('.badge').textContent()).resolves.toBe('active');
      // The old secret works for the hour of grace, and is flagged as about to expire.
      await expect(oldRow.locator('.badge.expiring').count()).resolves.toBe(1);

      const withNew = await callWithKey(rotated, '/v1/models');
      expect(withNew.status).toBe(200);
      const withOld = await callWithKey(secret, '/v1/models');
      expect(withOld.status).toBe(200);
      expect(withOld.headers.get('x-warning')).toMatch(/expires/);

      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      await expect(page.locator('#new-key-value').count()).resolves.toBe(0);
      expect(await page.content()).not.toContain(rotated.slice(4));
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'flags a key created with a 3-day expiry as "expires in 3 days"',
    async () => {
      const form = page.locator('form.create');
      await form.locator('input[name="name"]').fill('three-day key');
      await form.getByLabel('Expires in days').fill('3');
      await form.getByRole('button', { name: 'Create key' }).click();
      await shownSecret();
      await expect(keyRows('three-day key').locator('.badge').textContent()).resolves.toBe('expires in 3 days');

      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      await expect(keyRows('three-day key').locator('.badge').textContent()).resolves.toBe('expires in 3 days');
      await page.screenshot({ path: join(SCREENSHOTS_DIR, 'account-controls.png'), fullPage: true });
    },
    TEST_TIMEOUT_MS,
  );

  it('raised no console errors or CSP violations, under a CSP without unsafe-inline', async () => {
    const response = await page.goto(`${stack.url}${ACCOUNT_PATH}`);
    const policy = response?.headers()['content-security-policy'] ?? '';
    expect(policy).toMatch(/script-src 'self'/);
    expect(policy).not.toContain('unsafe-inline');
    expect(problems).toEqual([]);
  });
});
