/**
 * Two sign-in providers at once (`auth_providers`), each a real oidc-provider: the chooser at
 * /v1/auth/login in Chromium at laptop and phone width, a person from each provider signing in
 * (both with `sub` demo-user, kept as two users), the admin console naming each user's provider,
 * and the callbacks refusing what they must: a callback at one provider's path carrying a sign-in
 * started with the other (its code included) before any token endpoint is called, and an unknown
 * `?provider=`. Logout notices pick their provider by `iss`.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { startDemoProvider, DEMO_USER, type DemoProvider, type DemoUser } from '../../src/demo/provider.js';
import { collectConsoleProblems, launchChromium, reportCspViolations } from '../support/browser.js';
import { Browserless } from '../support/browserless.js';
import { freePort } from '../support/ports.js';
import { hasChromium, requireResource } from '../support/requirements.js';
import { startGateway, type RunningGateway } from '../support/stack.js';

const chromium = await requireResource('chromium', hasChromium(), 'apt-get install chromium');

const SCREENSHOTS_DIR = process.env.GATEHOUSE_SHOTS_DIR ?? join('test-results', 'screenshots');
const TEST_TIMEOUT_MS = 60_000;
/** Same `sub` as DEMO_USER at the other provider: only the issuer tells the two apart. */
const PARTNER: DemoUser = { ...DEMO_USER, email: 'pat@partner.example.org', name: 'Pat Partner', password: 'pat' };
const SECRETS = { corp: 'corp-secret-with-enough-length-1', partners: 'partners-secret-long-enough-22' };

describe('several sign-in providers', () => {
  let platform: SamplePlatform;
  let corp: DemoProvider;
  let partners: DemoProvider;
  let stack: RunningGateway;
  /** Every request the gateway's process sent, to tell whether a token endpoint was called. */
  const sent: Array<{ method: string; url: string }> = [];

  const tokenCalls = async (provider: DemoProvider) => {
    const metadata = (await (await fetch(provider.metadataUrl)).json()) as { token_endpoint: string };
    return sent.filter((request) => request.url === metadata.token_endpoint).length;
  };

  beforeAll(async () => {
    const realFetch = globalThis.fetch;
    vi.stubGlobal('fetch', (input: string | URL | Request, init?: RequestInit) => {
      const request = input instanceof Request ? input : new Request(input, init);
      sent.push({ method: request.method, url: request.url });
      return realFetch(input, init);
    });
    const port = await freePort();
    const website = `http://127.0.0.1:${port}`;
    const client = (id: keyof typeof SECRETS) => ({
      client_id: `gatehouse-${id}`,
      client_secret: SECRETS[id],
      redirect_uris: [`${website}/v1/auth/auth/${id}`],
      post_logout_redirect_uris: [website],
    });
    platform = await startSamplePlatform({ chunkDelayMs: 1 });
    corp = await startDemoProvider({ clients: [client('corp')] });
    // Another loopback address: a browser keeps cookies per host, and both providers name theirs alike.
    partners = await startDemoProvider({ host: '127.0.0.2', users: [PARTNER], clients: [client('partners')] });
    const listed = (id: keyof typeof SECRETS, name: string, provider: DemoProvider) => ({
      id,
      name,
      client_id: `gatehouse-${id}`,
      client_secret: SECRETS[id],
      server_metadata_url: provider.metadataUrl,
    });
    stack = await startGateway(
      (site) => ({
        powerml: { website: site },
        auth_providers: [listed('corp', 'Corp SSO', corp), listed('partners', 'Partner accounts', partners)],
        auth: { admin_emails: [DEMO_USER.email] },
        gateway: { upstream: platform.url },
      }),
      port,
    );
  }, TEST_TIMEOUT_MS);

  afterAll(async () => {
    vi.unstubAllGlobals();
    await stack?.close();
    await Promise.all([platform?.close(), corp?.close(), partners?.close()]);
  });

  /**
   * Starts a sign-in at `login`, signs in on the provider's form as `user`, and stops at the
   * provider's redirect to the gateway's callback, unfollowed.
   */
  async function untilCallback(browser: Browserless, login: string, user: DemoUser): Promise<URL> {
    const { response: form, visited } = await browser.follow(`${stack.url}${login}`);
    expect(form.status).toBe(200);
    await form.body?.cancel();
    const interaction = visited.at(-1)!;
    expect(interaction).toMatch(/\/interaction\/[\w-]+$/);
    let answer = await browser.fetch(`${interaction}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ email: user.email, password: user.password }),
    });
    let at = interaction;
    for (let hops = 0; hops < 10; hops += 1) {
      const next = new URL(answer.headers.get('location') ?? '', at);
      await answer.body?.cancel();
      if (next.href.startsWith(`${stack.url}/v1/auth/auth`)) return next;
      expect(answer.status, `no redirect from ${at}`).toBeGreaterThanOrEqual(300);
      answer = await browser.fetch(next.href);
      at = next.href;
    }
    throw new Error(`no callback reached from ${login}`);
  }

  /** Signs `user` in through provider `id` and returns who the gateway says they are. */
  async function signInAs(browser: Browserless, id: string, user: DemoUser) {
    const callback = await untilCallback(browser, `/v1/auth/login?provider=${id}&return_to=/v1/auth/me`, user);
    expect(callback.pathname).toBe(`/v1/auth/auth/${id}`);
    const { response } = await browser.follow(callback.href);
    expect(response.status).toBe(200);
    return (await response.json()) as { sub: string; email: string; name: string };
  }

  it('shows a chooser of both providers at /v1/auth/login, carrying return_to', async () => {
    const response = await fetch(`${stack.url}/v1/auth/login?return_to=/v1/models`, {
      headers: { accept: 'text/html' },
    });
    expect(response.status).toBe(200);
    const page = await response.text();
    expect(page).toContain('<h1>Sign in</h1>');
    expect(page).toContain(
      'href="/v1/auth/login?provider=corp&amp;return_to=%2Fv1%2Fmodels">Sign in with Corp SSO</a>',
    );
    expect(page).toContain(
      'href="/v1/auth/login?provider=partners&amp;return_to=%2Fv1%2Fmodels">Sign in with Partner accounts</a>',
    );
  });

  it('refuses ?provider= naming no configured provider with a page leading to the chooser', async () => {
    const response = await fetch(`${stack.url}/v1/auth/login?provider=evil&return_to=/v1/models`);
    expect(response.status).toBe(400);
    const page = await response.text();
    expect(page).toContain('Unknown sign-in provider');
    expect(page).toContain('href="/v1/auth/login?return_to=%2Fv1%2Fmodels"');
    expect(response.headers.get('set-cookie')).toBeNull();
  });

  it('signs in a person from each provider as two users, though both have sub demo-user', async () => {
    const before = { corp: await tokenCalls(corp), partners: await tokenCalls(partners) };
    const corpBrowser = new Browserless();
    const partnerBrowser = new Browserless();
    expect(await signInAs(corpBrowser, 'corp', DEMO_USER)).toMatchObject({ sub: 'demo-user', email: DEMO_USER.email });
    expect(await signInAs(partnerBrowser, 'partners', PARTNER)).toMatchObject({
      sub: 'demo-user',
      email: PARTNER.email,
      name: PARTNER.name,
    });
    // Each code went to the token endpoint of the provider that issued it, once.
    expect(await tokenCalls(corp)).toBe(before.corp + 1);
    expect(await tokenCalls(partners)).toBe(before.partners + 1);

    const admin = await corpBrowser.fetch(`${stack.url}/v1/auth/admin`, { headers: { accept: 'text/html' } });
    expect(admin.status).toBe(200);
    const page = await admin.text();
    expect(page).toContain('<th>Provider</th>');
    const rows = [
      ...page.matchAll(
        /<tr data-user-id="([^"]+)">\s*<td>([^<]+)<div[^>]*>[^<]*<\/div><\/td>\s*<td class="provider">([^<]+)<\/td>/g,
      ),
    ];
    expect(rows.map(([, , email, provider]) => [email, provider]).sort()).toEqual([
      [DEMO_USER.email, 'Corp SSO'],
      [PARTNER.email, 'Partner accounts'],
    ]);
    expect(new Set(rows.map(([, id]) => id)).size).toBe(2);
  });

  it('refuses a callback at one provider’s path for a sign-in started with the other, calling no token endpoint', async () => {
    const before = { corp: await tokenCalls(corp), partners: await tokenCalls(partners) };
    const browser = new Browserless();
    // A genuine partners code and state, delivered to the corp callback instead (a mix-up).
    const callback = await untilCallback(browser, '/v1/auth/login?provider=partners', PARTNER);
    expect(callback.pathname).toBe('/v1/auth/auth/partners');
    expect(callback.searchParams.get('code')).toBeTruthy();
    const forged = new URL(callback);
    forged.pathname = '/v1/auth/auth/corp';
    const refused = await browser.fetch(forged.href, { headers: { accept: 'text/html' } });
    expect(refused.status).toBe(400);
    expect(await refused.text()).toContain('came back from another provider than the one it was started with');
    expect(browser.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
    // The flow is spent: the genuine callback replayed now is refused too.
    const replayed = await browser.fetch(callback.href);
    expect(replayed.status).toBe(400);
    await replayed.body?.cancel();
    expect({ corp: await tokenCalls(corp), partners: await tokenCalls(partners) }).toEqual(before);
    expect(stack.logs.join('')).toContain('LOGIN_FLOW_PROVIDER_MISMATCH');
  });

  it('lets the front-channel iss pick its provider, and refuses an iss that names none', async () => {
    const partnerIssuer = partners.issuer;
    const picked = await fetch(
      `${stack.url}/v1/auth/frontchannel-logout?${new URLSearchParams({ iss: partnerIssuer, sid: 'no-such-sid' })}`,
    );
    expect(picked.status).toBe(200);
    expect(picked.headers.get('content-security-policy')).toBe(`default-src 'none'; frame-ancestors ${partnerIssuer}`);
    await picked.body?.cancel();
    const unknown = await fetch(
      `${stack.url}/v1/auth/frontchannel-logout?${new URLSearchParams({ iss: 'http://127.0.0.3:1', sid: 'x' })}`,
    );
    expect(unknown.status).toBe(400);
    expect(await unknown.text()).toBe('iss is not one of this gateway’s sign-in providers.');
  });

  it('answers back-channel logout tokens of no configured provider with 400', async () => {
    const forged = [
      'eyJhbGciOiJSUzI1NiJ9',
      Buffer.from(JSON.stringify({ iss: 'http://127.0.0.3:1' })).toString('base64url'),
      'x',
    ].join('.');
    const response = await fetch(`${stack.url}/v1/auth/backchannel-logout`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ logout_token: forged }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      error: 'invalid_request',
      error_description: 'the logout token’s iss is not one of this gateway’s sign-in providers',
    });
  });

  it.skipIf(!chromium)(
    'offers the chooser in Chromium at laptop and phone width, and signs in through the chosen provider',
    async () => {
      await mkdir(SCREENSHOTS_DIR, { recursive: true });
      const browser = await launchChromium();
      try {
        for (const viewport of [
          { width: 1280, height: 800 },
          { width: 390, height: 844 },
        ]) {
          const context = await browser.newContext({ viewport });
          const page = await context.newPage();
          const problems = collectConsoleProblems(page);
          await reportCspViolations(page);
          await page.goto(`${stack.url}/v1/auth/login?return_to=/v1/auth/account`);
          const choices = page.getByRole('list', { name: 'Choose the account you use for this service.' });
          await expect
            .poll(() => choices.getByRole('link').allTextContents())
            .toEqual(['Sign in with Corp SSO', 'Sign in with Partner accounts']);
          // Nothing wider than the screen: no sideways scrolling on a phone.
          expect(await page.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(
            viewport.width,
          );
          const link = await page.getByRole('link', { name: 'Sign in with Partner accounts' }).boundingBox();
          console.log(`chooser at ${viewport.width} px: partner link ${link?.width}x${link?.height} px`);
          await page.screenshot({ path: join(SCREENSHOTS_DIR, `chooser-${viewport.width}.png`), fullPage: true });
          if (viewport.width === 390) {
            await page.getByRole('link', { name: 'Sign in with Partner accounts' }).click();
            await page.waitForURL((url) => url.href.startsWith(`${partners.issuer}/interaction/`));
            await page.fill('input[name="email"]', PARTNER.email);
            await page.fill('input[name="password"]', PARTNER.password);
            await page.getByRole('button', { name: 'Sign in' }).click();
            await page.waitForURL(`${stack.url}/v1/auth/account`);
            expect(await page.textContent('body')).toContain(PARTNER.email);
          }
          expect(problems).toEqual([]);
          await context.close();
        }
      } finally {
        await browser.close();
      }
    },
    TEST_TIMEOUT_MS,
  );
});
