/**
 * What a person in a browser meets on every Gatehouse page, in a real Chromium against the real
 * gateway and the bundled provider: refusals as pages (programs keep JSON), the account page after
 * a rotation, a revoke and a removal, form errors that keep what was typed, the "how to use this
 * key" block, and no page wider than a phone or a laptop screen, in light and dark mode.
 *
 * The administrator signs in on the provider's form; a second, ordinary user holds a key created
 * with the `gatehouse keys create` code path, and browses with it as a bearer header. The tests run
 * in order and build on each other's changes.
 */
import { join } from 'node:path';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectConsoleProblems, openSignedInOnDemoForm } from '../support/browser.js';
import { SCREENSHOTS_DIR, startPagesStack, type PagesStack } from '../support/browser-stack.js';
import { hasChromium, requireResource } from '../support/requirements.js';
import { type DemoStack } from '../support/stack.js';

const available = await requireResource('chromium', hasChromium(), 'apt-get install chromium');

const TEST_TIMEOUT_MS = 60_000;
const ACCOUNT_PATH = '/v1/auth/account';
const ADMIN_PATH = '/v1/auth/admin';
const LONG_NAME = 'nightly-evaluation-pipeline-for-the-research-cluster-with-a-rather-long-descriptive-name';
/** The account page's Rotate button asks for this grace. */
const ROTATION_GRACE_MS = 60 * 60_000;
const VIEWPORTS = [
  { width: 1280, height: 800 },
  { width: 390, height: 844 },
] as const;

describe.skipIf(!available)('Gatehouse pages in a real browser', () => {
  let pages: PagesStack;
  let stack: DemoStack;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];
  let ordinaryKey: string;

  beforeAll(async () => {
    pages = await startPagesStack('pages-browser', VIEWPORTS[0]);
    ({ stack, browser, context, page, problems } = pages);
    ordinaryKey = await pages.createKeyByCli({
      email: 'carol@example.com',
      name: 'carol-notebook',
      // `keys` too, so the removal test below is refused for whose key it is, not for the scope.
      scopes: ['inference', 'keys'],
    });
    page.on('dialog', (dialog) => void dialog.accept());
  });

  afterAll(() => pages?.close());

  const rowsNamed = (name: string): Locator => page.locator('tbody tr[data-key-id]').filter({ hasText: name });

  async function createKey(name: string, days = ''): Promise<void> {
    const form = page.locator('form.create');
    await form.locator('input[name="name"]').fill(name);
    await form.getByLabel('Expires in days').fill(days);
    await form.getByRole('button', { name: 'Create key' }).click();
    await page.waitForLoadState();
  }

  it(
    'links the account page to the admin console for an administrator',
    async () => {
      const account = `${stack.url}${ACCOUNT_PATH}`;
      await openSignedInOnDemoForm(page, account, stack.provider.issuer);
      await page.getByRole('link', { name: 'Admin console' }).click();
      await page.waitForURL(`${stack.url}${ADMIN_PATH}`);
      await expect(page.locator('h1').textContent()).resolves.toBe('Admin');
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'keeps what was typed when the expiry is out of range, says the real range, and styles it as an error',
    async () => {
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      await createKey('typed name', '99999');
      const error = page.locator('.notice.error[role="alert"]');
      await expect(error.textContent()).resolves.toContain('1 to 36500');
      await expect(page.locator('form.create input[name="name"]').inputValue()).resolves.toBe('typed name');
      await expect(page.locator('form.create input[name="expires_in_days"]').inputValue()).resolves.toBe('99999');
      // Strings, not functions: the test is type-checked without the DOM library.
      const colours = await page.evaluate<{ error: string; notice: string }>(`(() => {
        const probe = document.createElement('p');
        probe.className = 'notice';
        document.querySelector('main').append(probe);
        const background = (element) => getComputedStyle(element).backgroundColor;
        return { error: background(document.querySelector('.notice.error')), notice: background(probe) };
      })()`);
      expect(colours.error).not.toBe(colours.notice);
      // The page with the error comes with its 400, which Chromium logs: expected here, not a problem.
      expect(problems.splice(0)).toEqual([expect.stringContaining('status of 400')]);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'shows a new key with how to use it: the website as base URL, OpenAI SDK, curl and Lamini snippets with Copy',
    async () => {
      await createKey(LONG_NAME);
      const secret = await page.locator('#new-key-value').inputValue();
      const howTo = page.locator('#new-key details.howto[open]');
      const text = await howTo.innerText();
      expect(text).toContain(`base_url="${stack.url}/v1", api_key="${secret}"`);
      expect(text).toContain(`baseURL: '${stack.url}/v1'`);
      expect(text).toContain(`curl ${stack.url}/v1/models`);
      expect(text).toContain(`lamini.api_url = "${stack.url}"`);
      expect(text).toContain(`lamini.api_key = "${secret}"`);
      await expect(howTo.getByRole('button', { name: 'Copy' }).count()).resolves.toBe(4);
      // Without a secret on show, the block is still there, folded, with a placeholder.
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      await expect(page.locator('details.howto').innerText()).resolves.toContain('How to use a key');
      await expect(page.locator('details.howto').textContent()).resolves.toContain('YOUR_API_KEY');
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'tells a rotated key from its replacement: "replaced by" its stub, works until the real grace end, no Rotate',
    async () => {
      await createKey('to-rotate');
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      const rotatedAt = Date.now();
      await rowsNamed('to-rotate').getByRole('button', { name: 'Rotate' }).click();
      await page.locator('#new-key-value').waitFor();
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);

      const rows = rowsNamed('to-rotate');
      await expect(rows.count()).resolves.toBe(2);
      const old = rows.filter({ hasText: 'replaced' });
      const replacement = rows.filter({ hasNotText: 'replaced' });
      const replacementStub = await replacement.locator('td code').first().textContent();
      const state = await old.locator('td').nth(6).innerText();
      expect(state).toContain(`by ${replacementStub}`);
      // The grace end, to the minute the server rendered it: one of the two minutes around the click.
      const ends = [rotatedAt, Date.now()].map((t) => new Date(t + ROTATION_GRACE_MS).toISOString().slice(11, 16));
      expect(ends.some((end) => state.includes(`works until ${end} UTC`))).toBe(true);
      expect(state).not.toContain('day');
      await expect(old.getByRole('button', { name: 'Rotate' }).count()).resolves.toBe(0);
      await expect(replacement.getByRole('button', { name: 'Rotate' }).count()).resolves.toBe(1);
      // The admin console tells them apart too.
      await page.goto(`${stack.url}${ADMIN_PATH}`);
      const adminRows = page.locator('tr[data-key-id]').filter({ hasText: 'to-rotate' });
      await expect(adminRows.locator('.badge').allTextContents()).resolves.toEqual(
        expect.arrayContaining(['replaced', 'active']),
      );
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'confirms a revoke, then removes the revoked key from the list while the audit keeps the record',
    async () => {
      await createKey('to-remove');
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      await rowsNamed('to-remove').getByRole('button', { name: 'Revoke' }).click();
      await page.waitForURL(`${stack.url}${ACCOUNT_PATH}?done=revoked`);
      await expect(page.locator('.notice.done').textContent()).resolves.toContain('revoked');
      const id = await rowsNamed('to-remove').getAttribute('data-key-id');
      await expect(rowsNamed('to-remove').getByRole('button', { name: 'Revoke' }).count()).resolves.toBe(0);

      await rowsNamed('to-remove').getByRole('button', { name: 'Remove' }).click();
      await page.waitForURL(`${stack.url}${ACCOUNT_PATH}?done=removed`);
      await expect(rowsNamed('to-remove').count()).resolves.toBe(0);

      const exported = await page.request.get(`${stack.url}${ADMIN_PATH}/audit?event=key_removed`);
      expect(exported.headers()['content-disposition']).toMatch(
        /^attachment; filename="gatehouse-audit-\d{4}-\d{2}-\d{2}\.jsonl"$/,
      );
      expect(await exported.text()).toContain(`"target":"${id}"`);
      // Recreate a revoked row for the layout checks below.
      await createKey('revoked-for-layout');
      await page.goto(`${stack.url}${ACCOUNT_PATH}`);
      await rowsNamed('revoked-for-layout').getByRole('button', { name: 'Revoke' }).click();
      await page.waitForURL(`${stack.url}${ACCOUNT_PATH}?done=revoked`);
    },
    TEST_TIMEOUT_MS,
  );

  it("refuses to remove a live key, or another user's revoked key, through the API", async () => {
    const removeAs = async (id: string | null, headers: Record<string, string>) => {
      const answer = await fetch(`${stack.url}/v1/auth/api-keys/${id}/remove`, { method: 'POST', headers });
      return { status: answer.status, code: ((await answer.json()) as { error: { code: string } }).error.code };
    };
    const live = await page.request.post(
      `${stack.url}/v1/auth/api-keys/${await rowsNamed(LONG_NAME).getAttribute('data-key-id')}/remove`,
      { headers: { origin: stack.url } },
    );
    expect(live.status()).toBe(409);
    const othersRevoked = await rowsNamed('revoked-for-layout').getAttribute('data-key-id');
    await expect(removeAs(othersRevoked, { authorization: `Bearer ${ordinaryKey}` })).resolves.toEqual({
      status: 409,
      code: 'api_key_not_removable',
    });
    await page.goto(`${stack.url}${ACCOUNT_PATH}`);
    await expect(rowsNamed('revoked-for-layout').count()).resolves.toBe(1);
  });

  it('answers a non-admin browser with an HTML "Not allowed" page and a program with OpenAI-shaped JSON', async () => {
    for (const path of [ADMIN_PATH, `${ADMIN_PATH}/users`]) {
      const headers = { authorization: `Bearer ${ordinaryKey}` };
      const asBrowser = await fetch(`${stack.url}${path}`, { headers: { ...headers, accept: 'text/html' } });
      expect(asBrowser.status).toBe(403);
      expect(asBrowser.headers.get('content-type')).toMatch(/^text\/html/);
      const page = await asBrowser.text();
      expect(page).toContain('<h1>Not allowed</h1>');
      expect(page).toContain(`href="${ACCOUNT_PATH}"`);

      const asProgram = await fetch(`${stack.url}${path}`, { headers });
      expect(asProgram.status).toBe(403);
      expect(asProgram.headers.get('content-type')).toMatch(/^application\/json/);
      const body = (await asProgram.json()) as { error: { type: string } };
      expect(body.error.type).toBe('permission_error');
    }
    // A form posted from a browser, and a mistyped address, are pages too.
    const posted = await fetch(`${stack.url}${ADMIN_PATH}/users/someone/disable`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ordinaryKey}`, accept: 'text/html', origin: stack.url },
    });
    expect([posted.status, posted.headers.get('content-type')]).toEqual([403, 'text/html; charset=utf-8']);
    const missing = await fetch(`${stack.url}/v1/auth/acount`, { headers: { accept: 'text/html' } });
    expect([missing.status, missing.headers.get('content-type')]).toEqual([404, 'text/html; charset=utf-8']);
    await expect(missing.text()).resolves.toContain('<h1>Not found</h1>');
  });

  /** Every page a person can land on, and the context that reaches it. */
  function pagesToCheck(ordinary: BrowserContext) {
    return [
      { name: 'account', context, path: ACCOUNT_PATH },
      { name: 'admin', context, path: ADMIN_PATH },
      { name: 'not-allowed', context: ordinary, path: ADMIN_PATH },
      { name: 'signed-out', context: ordinary, path: '/v1/auth/signed-out' },
      { name: 'sign-in-error', context: ordinary, path: '/v1/auth/auth?error=access_denied' },
    ];
  }

  it(
    'fits every page in 1280 and 390 px without horizontal page scroll, in light and dark mode, without console errors',
    async () => {
      const ordinary = await browser.newContext({ extraHTTPHeaders: { authorization: `Bearer ${ordinaryKey}` } });
      const wide: string[] = [];
      for (const target of pagesToCheck(ordinary)) {
        const tab = await target.context.newPage();
        const tabProblems = collectConsoleProblems(tab);
        for (const viewport of VIEWPORTS) {
          for (const colorScheme of ['light', 'dark'] as const) {
            await tab.setViewportSize(viewport);
            await tab.emulateMedia({ colorScheme });
            await tab.goto(`${stack.url}${target.path}`);
            // Unfolded, so the snippets' long lines are measured too.
            if (target.name === 'account') await tab.locator('details.howto summary').click();
            const { scrollWidth, innerWidth } = await tab.evaluate<{ scrollWidth: number; innerWidth: number }>(
              '({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth })',
            );
            if (scrollWidth > innerWidth)
              wide.push(`${target.name} at ${viewport.width} (${colorScheme}): ${scrollWidth}`);
            await tab.screenshot({
              path: join(SCREENSHOTS_DIR, `page-${target.name}-${viewport.width}-${colorScheme}.png`),
              fullPage: true,
            });
          }
        }
        // Chromium logs the refusal pages' own 4xx status; any other problem counts.
        const ownStatus = (problem: string) =>
          problem.includes('status of 4') && problem.includes(`${stack.url}/v1/auth/`);
        expect(
          tabProblems.filter((problem) => !ownStatus(problem)),
          target.name,
        ).toEqual([]);
        await tab.close();
      }
      await ordinary.close();
      expect(wide).toEqual([]);
      expect(problems).toEqual([]);
    },
    TEST_TIMEOUT_MS * 2,
  );
});
