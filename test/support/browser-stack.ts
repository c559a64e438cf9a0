import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page, ViewportSize } from 'playwright-core';
import { createKeyCommand, type CreateKeyOptions } from '../../src/commands/keys.js';
import { loadConfigFromObject } from '../../src/config/index.js';
import { collectConsoleProblems, launchChromium, reportCspViolations } from './browser.js';
import { DEMO_USER, signInThrough, startDemoStack, type DemoStack } from './stack.js';

/** Where browser tests write the screenshots a reviewer looks at. */
export const SCREENSHOTS_DIR = join('test-results', 'screenshots');

/** The demo stack with its user an administrator, Chromium, and one page watched for console problems. */
export interface PagesStack {
  stack: DemoStack;
  browser: Browser;
  context: BrowserContext;
  page: Page;
  /** Console errors, warnings and CSP violations on `page`, from its opening on. */
  problems: string[];
  /** `gatehouse keys create` on the gateway's own database, as an operator runs it; resolves with the key. */
  createKeyByCli(options: CreateKeyOptions): Promise<string>;
  close(): Promise<void>;
}

/**
 * Starts the demo stack on a SQLite file (not :memory:, so the CLI and the gateway share one
 * database) with the demo user an administrator, and Chromium with one page at `viewport`.
 */
export async function startPagesStack(name: string, viewport: ViewportSize): Promise<PagesStack> {
  await mkdir(SCREENSHOTS_DIR, { recursive: true });
  const dataDir = await mkdtemp(join(tmpdir(), `gatehouse-${name}-`));
  const storage = { gateway: { data_dir: dataDir }, database: { url: `sqlite:${join(dataDir, 'gatehouse.db')}` } };
  const [stack, browser] = await Promise.all([
    startDemoStack({ auth: { admin_emails: [DEMO_USER.email] }, ...storage }),
    launchChromium(),
  ]);
  const cliConfig = loadConfigFromObject(
    signInThrough(stack.url, stack.provider.metadataUrl, stack.platform.url, storage),
    `${name}.test`,
  );
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems = collectConsoleProblems(page);
  await reportCspViolations(page);
  return {
    stack,
    browser,
    context,
    page,
    problems,
    async createKeyByCli(options) {
      const printed = await createKeyCommand(cliConfig, options);
      const key = /^gth_\S+$/m.exec(printed);
      if (!key) throw new Error(`gatehouse keys create printed no key: ${printed}`);
      return key[0];
    },
    async close() {
      await browser.close();
      await stack.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
