/** Starts the system Chromium for browser tests; pair with `requireResource('chromium', ...)`. */
import { chromium, type Browser } from 'playwright-core';
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
