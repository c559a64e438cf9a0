/** Starts the system Chromium for browser tests; pair with `requireResource('chromium', ...)`. */
import { chromium, type Browser, type Page } from 'playwright-core';
import { DEMO_USER } from '../../src/demo/provider.js';
import { chromiumPath } from './requirements.js';

/**
 * Headless Chromium with a throwaway profile (Playwright creates and removes the user-data dir).
 * Background networking, sync, component updates and QUIC are off so the only traffic is the
 * test's own, against loopback servers.
 */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
    ],
  });
}

/**
 * Collects console errors and warnings (CSP violations among them, see reportCspViolations) and
 * uncaught exceptions. The browser's own /favicon.ico request is left out: the gateway forwards it
 * to the platform, so its 404 says nothing about the page, and Chromium asks for it only once per
 * browser, so it would be flaky.
 */
export function collectConsoleProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (message) => {
    const source = message.location().url;
    if ((message.type() === 'error' || message.type() === 'warning') && !source.endsWith('/favicon.ico')) {
      problems.push(`${message.type()}: ${message.text()} (${source})`);
    }
  });
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  return problems;
}

/** Logs every CSP violation as a console error. Injected through DevTools, so the page's own CSP does not block it. */
export async function reportCspViolations(page: Page): Promise<void> {
  await page.addInitScript({
    content: `document.addEventListener('securitypolicyviolation', (event) =>
      console.error('CSP violation: ' + event.violatedDirective + ' blocked ' + event.blockedURI));`,
  });
}

/** Opens `target` on a gateway, signs in as the demo user on the demo provider's form, and waits to be back. */
export async function openSignedInOnDemoForm(page: Page, target: string, providerIssuer: string): Promise<void> {
  await page.goto(target);
  await page.waitForURL((url) => url.href.startsWith(`${providerIssuer}/interaction/`));
  await page.fill('input[name="email"]', DEMO_USER.email);
  await page.fill('input[name="password"]', DEMO_USER.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(target);
}
