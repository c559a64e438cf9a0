/**
 * Gatehouse against a real OpenID-certified provider: Debian's glewlwyd, configured by
 * test/support/glewlwyd.ts, with Gatehouse's default settings (no token_endpoint_auth_method)
 * and a client secret holding `-_.~`. A person signs in in Chromium, makes a key and uses it the
 * way OpenAI's client does, the session refreshes, signs out at Gatehouse and comes back to the
 * website, a sign-out at glewlwyd reaches Gatehouse over the back and the front channel, and ID tokens are
 * accepted signed with RS256 and, after glewlwyd switches keys, ES256.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeProtectedHeader } from 'jose';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { launchChromium } from '../support/browser.js';
import {
  GLEWLWYD_CLIENT,
  GLEWLWYD_INSTALL,
  GLEWLWYD_USER,
  hasGlewlwyd,
  startGlewlwyd,
  type Glewlwyd,
} from '../support/glewlwyd.js';
import { freePort } from '../support/ports.js';
import { hasChromium, requireResource } from '../support/requirements.js';
import { signInThrough, startGateway, type RunningGateway } from '../support/stack.js';

const available =
  (await requireResource('chromium', hasChromium(), 'apt-get install chromium')) &&
  (await requireResource('glewlwyd', hasGlewlwyd(), GLEWLWYD_INSTALL));

const STEP_TIMEOUT_MS = 60_000;
/** How long glewlwyd's end-session page may take to send the browser back to the website. */
const RETURN_TIMEOUT_MS = 20_000;
/** Inside the gateway's refresh window (an ID token's last 60 s) from the moment it is issued. */
const ID_TOKEN_LIFETIME_SECONDS = 50;
/** A session is served from memory for 900 ms (LOCAL_TTL_MS, src/sessions/store.ts); 100 ms of slack. */
const SESSION_CACHE_MS = 900 + 100;
const SESSION_COOKIE = 'gatehouse_session';

interface ChatCompletion {
  object: string;
  choices: Array<{ message: { role: string; content: string } }>;
}

describe.skipIf(!available)('Gatehouse with glewlwyd, an OpenID-certified provider', () => {
  let dir: string;
  let glewlwyd: Glewlwyd;
  let platform: SamplePlatform;
  let gateway: RunningGateway;
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  const startedAt = Date.now();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-glewlwyd-'));
    const port = await freePort();
    const website = `http://127.0.0.1:${port}`;
    [glewlwyd, platform, browser] = await Promise.all([
      startGlewlwyd({ dir, port: await freePort(), website, idTokenLifetimeSeconds: ID_TOKEN_LIFETIME_SECONDS }),
      startSamplePlatform({ chunkDelayMs: 0 }),
      launchChromium(),
    ]);
    gateway = await startGateway(
      (site) =>
        signInThrough(site, glewlwyd.metadataUrl, platform.url, {
          auth_provider: { client_id: GLEWLWYD_CLIENT.id, client_secret: GLEWLWYD_CLIENT.secret },
        }),
      port,
    );
  }, STEP_TIMEOUT_MS);

  afterAll(async () => {
    await Promise.all(contexts.map((context) => context.close()));
    await browser?.close();
    await gateway?.close();
    await Promise.all([glewlwyd?.close(), platform?.close()]);
    console.info(`glewlwyd suite: ${Date.now() - startedAt} ms`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  afterEach(async () => {
    await Promise.all(contexts.splice(0).map((context) => context.close()));
  });

  async function freshPage(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext();
    contexts.push(context);
    return { context, page: await context.newPage() };
  }

  /** From the gateway's login to `returnTo`, through glewlwyd's login form and its "Continue". */
  async function signIn(page: Page, returnTo = '/v1/auth/me'): Promise<void> {
    await page.goto(`${gateway.url}/v1/auth/login?return_to=${encodeURIComponent(returnTo)}`);
    await page.waitForURL((url) => url.href.startsWith(glewlwyd.origin) || url.href.startsWith(gateway.url));
    if (page.url().startsWith(glewlwyd.origin)) {
      const form = page.locator('#username');
      const continueButton = page.getByRole('button', { name: 'Continue' });
      await form.or(continueButton).first().waitFor();
      if (await form.isVisible()) {
        await page.fill('#username', GLEWLWYD_USER.username);
        await page.fill('#password', GLEWLWYD_USER.password);
        await page.click('#loginbut');
      }
      await continueButton.click();
    }
    await page.waitForURL(`${gateway.url}${returnTo}`);
  }

  async function sessionOf(context: BrowserContext): Promise<string | undefined> {
    return (await context.cookies(gateway.url)).find((cookie) => cookie.name === SESSION_COOKIE)?.value;
  }

  /** Tokens glewlwyd issued to Gatehouse so far: one per code redeemed and one per refresh. */
  function tokensIssued(): number {
    return glewlwyd.log().split(`Access token generated for client '${GLEWLWYD_CLIENT.id}'`).length - 1;
  }

  function me(session: string): Promise<Response> {
    return fetch(`${gateway.url}/v1/auth/me`, { headers: { cookie: `${SESSION_COOKIE}=${session}` } });
  }

  it(
    'signs a person in with the default settings, using the client authentication glewlwyd accepts',
    async () => {
      const { context, page } = await freshPage();
      await signIn(page);
      expect(JSON.parse(await page.locator('body').innerText())).toEqual({
        sub: expect.any(String),
        email: GLEWLWYD_USER.email,
        name: GLEWLWYD_USER.name,
      });
      expect(await sessionOf(context)).toBeDefined();
      const log = gateway.logs.join('');
      expect(log).toContain('"tokenEndpointAuthMethod":"client_secret_post"');
      expect(log).not.toContain(GLEWLWYD_CLIENT.secret);
    },
    STEP_TIMEOUT_MS,
  );

  it(
    'makes a key that works as OpenAI’s client sends it (plain fetch: the openai package is not installed)',
    async () => {
      const { context, page } = await freshPage();
      await signIn(page);
      const session = (await sessionOf(context))!;
      const created = await fetch(`${gateway.url}/v1/auth/api-keys`, {
        method: 'POST',
        headers: { cookie: `${SESSION_COOKIE}=${session}`, origin: gateway.url, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'glewlwyd-e2e' }),
      });
      expect(created.status).toBe(201);
      const { key } = (await created.json()) as { key: string };
      // What openai-node sends: Bearer key, JSON body, its own headers; the base URL ends in /v1.
      const completion = await fetch(`${gateway.url}/v1/chat/completions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          accept: 'application/json',
          'user-agent': 'OpenAI/JS 4.0.0',
          'x-stainless-lang': 'js',
        },
        body: JSON.stringify({ model: 'demo-small', messages: [{ role: 'user', content: 'hello glewlwyd' }] }),
      });
      expect(completion.status).toBe(200);
      const body = (await completion.json()) as ChatCompletion;
      expect(body.object).toBe('chat.completion');
      expect(body.choices[0]?.message.content).toContain('hello glewlwyd');
      const models = await fetch(`${gateway.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      expect(models.status).toBe(200);
    },
    STEP_TIMEOUT_MS,
  );

  it(
    'refreshes the session with glewlwyd’s refresh token while the ID token is in its last minute',
    async () => {
      const { context, page } = await freshPage();
      await signIn(page);
      const session = (await sessionOf(context))!;
      const issuedBefore = tokensIssued();
      // Past the session cache's life, so the next request reads the session and refreshes it.
      await new Promise((resolve) => setTimeout(resolve, SESSION_CACHE_MS));
      expect((await me(session)).status).toBe(200);
      expect(tokensIssued()).toBeGreaterThan(issuedBefore);
      expect(gateway.logs.join('')).not.toContain('token refresh refused');
    },
    STEP_TIMEOUT_MS,
  );

  /** Gatehouse's sign-out, then "Logout" on glewlwyd's end-session page; resolves with the website URL it returns to. */
  async function signOut(page: Page): Promise<URL> {
    const returned = new Promise<URL>((resolve) => {
      page.on('request', (request) => {
        const url = new URL(request.url());
        if (url.origin === gateway.url && url.pathname === '/' && request.isNavigationRequest()) resolve(url);
      });
    });
    await page.goto(`${gateway.url}/v1/auth/logout`);
    // glewlwyd's end-session page is a script-built page: a click that comes before its script is
    // ready, or that meets a failed call of its own, leaves the page blank (seen once in eight CI
    // runs). Then the page is loaded again and clicked again, as a person would.
    for (let attempt = 1; ; attempt++) {
      await page.getByRole('button', { name: 'Logout' }).click();
      const waited = await Promise.race([
        returned,
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), RETURN_TIMEOUT_MS / 2)),
      ]);
      if (waited) return waited;
      if (attempt === 2) {
        const text = await page.locator('body').innerText();
        throw new Error(`no return to the website from ${page.url()}: ${text.slice(0, 500)}`);
      }
      await page.reload();
    }
  }

  function signOutAudits(): Array<{ actor_email: string | null; detail: { reason?: string } }> {
    return gateway.logs
      .flatMap((chunk) => chunk.split('\n'))
      .filter((line) => line.includes('"audit: sign_out"'))
      .map(
        (line) => (JSON.parse(line) as { audit: { actor_email: string | null; detail: { reason?: string } } }).audit,
      );
  }

  it(
    'signs out at Gatehouse and at glewlwyd, and comes back to the website with the state it sent',
    async () => {
      const { context, page } = await freshPage();
      await signIn(page);
      const session = (await sessionOf(context))!;
      const endSession = page.waitForRequest((request) => request.url().startsWith(`${glewlwyd.issuer}/end_session`));
      const back = await signOut(page);
      const sent = new URL((await endSession).url()).searchParams;
      expect(decodeProtectedHeader(sent.get('id_token_hint')!)).toMatchObject({ alg: 'RS256' });
      expect(sent.get('state')).toMatch(/^[\w-]{20,}$/);
      expect(back.searchParams.get('state')).toBe(sent.get('state'));
      expect((await me(session)).status).toBe(401);
    },
    STEP_TIMEOUT_MS,
  );

  /**
   * Signs in twice in one glewlwyd session (a second browser given glewlwyd's cookies; cookies
   * ignore ports, so Gatehouse's are told apart by name), signs the second out at glewlwyd, and
   * expects the first Gatehouse session ended by `channel` alone.
   */
  async function expectEndedOver(channel: 'back' | 'front'): Promise<void> {
    await glewlwyd.setLogoutChannels({ front: channel === 'front', back: channel === 'back' });
    try {
      const first = await freshPage();
      await signIn(first.page);
      const firstSession = (await sessionOf(first.context))!;
      const second = await freshPage();
      const providerCookies = (await first.context.cookies(glewlwyd.origin)).filter(({ name }) =>
        name.startsWith('GLEWLWYD'),
      );
      expect(providerCookies).not.toEqual([]);
      await second.context.addCookies(providerCookies);
      await signIn(second.page);
      expect((await me(firstSession)).status).toBe(200);
      await signOut(second.page);
      await expect.poll(async () => (await me(firstSession)).status, { timeout: 10_000 }).toBe(401);
      expect(signOutAudits().map((audit) => audit.detail.reason)).toContain(`${channel}channel`);
    } finally {
      await glewlwyd.setLogoutChannels({ front: true, back: true });
    }
  }

  it(
    'ends a session when the person signs out at glewlwyd elsewhere, over the back channel',
    () => expectEndedOver('back'),
    STEP_TIMEOUT_MS,
  );

  it(
    'ends a session when the person signs out at glewlwyd elsewhere, over the front channel',
    () => expectEndedOver('front'),
    STEP_TIMEOUT_MS,
  );

  it(
    'accepts ID tokens signed with ES256 once glewlwyd switches to its EC key, without a restart',
    async () => {
      await glewlwyd.setSigningKey('ec');
      try {
        const { context, page } = await freshPage();
        await signIn(page);
        expect(await sessionOf(context)).toBeDefined();
        const endSession = page.waitForRequest((request) => request.url().startsWith(`${glewlwyd.issuer}/end_session`));
        await signOut(page);
        const idToken = new URL((await endSession).url()).searchParams.get('id_token_hint')!;
        expect(decodeProtectedHeader(idToken)).toMatchObject({ alg: 'ES256', kid: 'gatehouse-es256' });
      } finally {
        await glewlwyd.setSigningKey('rsa');
      }
    },
    STEP_TIMEOUT_MS,
  );
});
