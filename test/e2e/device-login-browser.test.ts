/**
 * `gatehouse login` end to end: the command line in a child process asks the gateway for a code,
 * a person signs in with Chromium on the bundled provider's form and approves, and the key the
 * command line wrote is then used with the `openai` npm client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectConsoleProblems, launchChromium, openSignedInOnDemoForm } from '../support/browser.js';
import { gatehouseArgs } from '../support/cli.js';
import { hasChromium, requireResource } from '../support/requirements.js';
import { startDemoStack, type DemoStack } from '../support/stack.js';

const available = await requireResource('chromium', hasChromium(), 'apt-get install chromium');

const TEST_TIMEOUT_MS = 90_000;
const SCREENSHOTS_DIR = join('test-results', 'screenshots');
const VIEWPORTS = [
  { width: 1280, height: 800 },
  { width: 390, height: 844 },
] as const;

interface Login {
  child: ChildProcess;
  /** The verification_uri_complete the command printed. */
  url: Promise<string>;
  /** Exit code, stdout and stderr once the command ends. */
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function runLogin(...args: string[]): Login {
  const child = spawn(process.execPath, gatehouseArgs('login', ...args), { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let announce: (url: string) => void = () => undefined;
  const url = new Promise<string>((resolve) => (announce = resolve));
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    const complete = /\(or open (\S+)\)/.exec(stderr);
    if (complete) announce(complete[1]!);
  });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  return { child, url, done };
}

describe.skipIf(!available)('gatehouse login with a browser approval', () => {
  let stack: DemoStack;
  let browser: Browser;
  let page: Page;
  let problems: string[];
  let dir: string;

  beforeAll(async () => {
    stack = await startDemoStack({ auth: { device: { poll_interval_seconds: 1 } } });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: VIEWPORTS[0] });
    problems = collectConsoleProblems(page);
    dir = await mkdtemp(join(tmpdir(), 'gatehouse-login-'));
    await mkdir(SCREENSHOTS_DIR, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(
    'writes a key the person approved, which the openai client can use',
    async () => {
      const envFile = join(dir, '.env');
      const login = runLogin('--url', stack.url, '--scopes', 'inference', '--write-env', envFile);
      const url = await login.url;
      expect(url).toMatch(new RegExp(`^${stack.url}/v1/auth/device\\?user_code=[A-Z]{4}-[A-Z]{4}$`));

      await openSignedInOnDemoForm(page, url, stack.provider.issuer);
      await expect(page.getByRole('heading', { name: 'Allow this device?' }).count()).resolves.toBe(1);
      const shown = await page.locator('main').innerText();
      expect(shown).toContain('gatehouse-cli');
      expect(shown).toContain('127.0.0.1');
      expect(shown).toContain('inference');
      for (const viewport of VIEWPORTS) {
        await page.setViewportSize(viewport);
        const { scrollWidth, innerWidth } = await page.evaluate<{ scrollWidth: number; innerWidth: number }>(
          '({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth })',
        );
        expect(scrollWidth, `device page at ${viewport.width}`).toBeLessThanOrEqual(innerWidth);
        await page.screenshot({ path: join(SCREENSHOTS_DIR, `device-consent-${viewport.width}.png`), fullPage: true });
      }
      await page.setViewportSize(VIEWPORTS[0]);
      await page.getByRole('button', { name: 'Approve' }).click();
      await page.getByRole('heading', { name: 'Device approved' }).waitFor();
      await page.screenshot({ path: join(SCREENSHOTS_DIR, 'device-approved-1280.png') });

      const { code, stderr } = await login.done;
      expect(code, stderr).toBe(0);
      expect((await stat(envFile)).mode & 0o777).toBe(0o600);
      const env = Object.fromEntries(
        (await readFile(envFile, 'utf8'))
          .trim()
          .split('\n')
          .map((line) => line.split(/=(.*)/s).slice(0, 2) as [string, string]),
      );
      expect(env.OPENAI_BASE_URL).toBe(`${stack.url}/v1`);
      expect(env.OPENAI_API_KEY).toMatch(/^gth_/);

      const client = new OpenAI({ apiKey: env.OPENAI_API_KEY, baseURL: env.OPENAI_BASE_URL, maxRetries: 0 });
      const models = await client.models.list();
      expect(models.data.map((model) => model.id)).toContain('demo-small');
      const completion = await client.chat.completions.create({
        model: 'demo-small',
        messages: [{ role: 'user', content: 'hello from the command line' }],
      });
      expect(completion.choices[0]?.message.content).toEqual(expect.any(String));
      // Approved keys are listed on the account page like any other.
      await page.goto(`${stack.url}/v1/auth/account`);
      expect(await page.locator('table.keys').innerText()).toContain('gatehouse-cli on');
      expect(problems).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'ends with an error, and prints no key, when the person denies',
    async () => {
      const login = runLogin('--url', stack.url);
      await page.goto(await login.url);
      await page.getByRole('button', { name: 'Deny' }).click();
      await page.getByRole('heading', { name: 'Device denied' }).waitFor();
      const { code, stdout, stderr } = await login.done;
      expect(code).toBe(1);
      expect(stderr).toContain('access_denied');
      expect(stdout).toBe('');
      // The page where a code is typed by hand, at phone width.
      await page.setViewportSize(VIEWPORTS[1]);
      await page.goto(`${stack.url}/v1/auth/device`);
      await page.getByRole('button', { name: 'Continue' }).waitFor();
      await page.screenshot({ path: join(SCREENSHOTS_DIR, 'device-entry-390.png') });
    },
    TEST_TIMEOUT_MS,
  );
});
