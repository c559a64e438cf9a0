import { createHash, randomBytes } from 'node:crypto';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_USER, startDemoProvider, type DemoProvider } from '../../src/demo/provider.js';

const CLIENT = {
  client_id: 'gatehouse-test',
  client_secret: 'test-secret-that-is-long-enough',
  redirect_uris: ['http://127.0.0.1:9/auth/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1:9/signed-out'],
};
const REDIRECT_URI = CLIENT.redirect_uris[0] ?? '';

let provider: DemoProvider;
let metadata: Record<string, unknown>;

beforeAll(async () => {
  provider = await startDemoProvider({ clients: [CLIENT], idTokenTtlSeconds: 120 });
  metadata = (await (await fetch(provider.metadataUrl)).json()) as Record<string, unknown>;
});
afterAll(() => provider.close());

/** Just enough of a browser: remembers cookies (ignoring paths) and never follows redirects. */
function createBrowser() {
  const cookies = new Map<string, string>();
  return {
    async request(url: string, init: RequestInit = {}): Promise<Response> {
      const cookie = [...cookies].map(([name, value]) => `${name}=${value}`).join('; ');
      const response = await fetch(new URL(url, provider.issuer), {
        ...init,
        redirect: 'manual',
        headers: { ...(init.headers as Record<string, string>), ...(cookie ? { cookie } : {}) },
      });
      for (const line of response.headers.getSetCookie()) {
        const [pair = '', ...attributes] = line.split(';');
        const [name = '', value = ''] = pair.split('=');
        const expired = attributes.some((a) => /expires=thu, 01 jan 1970/i.test(a.trim()));
        if (value === '' || expired) cookies.delete(name.trim());
        else cookies.set(name.trim(), value);
      }
      return response;
    },
  };
}
type Browser = ReturnType<typeof createBrowser>;

function startAuthorization(extra: Record<string, string> = {}) {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const state = randomBytes(8).toString('hex');
  const nonce = randomBytes(8).toString('hex');
  const url = new URL(String(metadata.authorization_endpoint));
  url.search = new URLSearchParams({
    client_id: CLIENT.client_id,
    redirect_uri: REDIRECT_URI,
    response_type: 'code',
    scope: 'openid email profile',
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    ...extra,
  }).toString();
  return { url: url.href, verifier, state, nonce };
}

/** Follows redirects until the client's redirect URI or a page that is not a redirect. */
async function follow(browser: Browser, url: string): Promise<{ location?: URL; page?: Response }> {
  let next = url;
  for (let hop = 0; hop < 10; hop += 1) {
    if (next.startsWith(REDIRECT_URI) || next.startsWith('http://127.0.0.1:9/')) {
      return { location: new URL(next) };
    }
    const response = await browser.request(next);
    const location = response.headers.get('location');
    if (!location) return { page: response };
    next = new URL(location, provider.issuer).href;
  }
  throw new Error('too many redirects');
}

async function openLoginPage(browser: Browser, url: string): Promise<{ action: string; html: string }> {
  const { page } = await follow(browser, url);
  expect(page?.status).toBe(200);
  const html = (await page?.text()) ?? '';
  const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1] ?? '';
  return { action, html };
}

function postLogin(browser: Browser, action: string, email: string, password: string) {
  return browser.request(action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ email, password }).toString(),
  });
}

async function redeemCode(code: string, verifier: string) {
  const basic = Buffer.from(`${CLIENT.client_id}:${CLIENT.client_secret}`).toString('base64');
  const response = await fetch(String(metadata.token_endpoint), {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
    }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as { id_token: string; access_token: string; refresh_token?: string };
}

/** One complete sign-in as the demo user; returns the browser (signed in) and the ID token. */
async function signIn(browser = createBrowser()) {
  const request = startAuthorization();
  const { action } = await openLoginPage(browser, request.url);
  const submitted = await postLogin(browser, action, DEMO_USER.email, DEMO_USER.password);
  expect(submitted.status).toBe(303);
  const { location } = await follow(browser, new URL(submitted.headers.get('location') ?? '', provider.issuer).href);
  expect(location?.searchParams.get('state')).toBe(request.state);
  const tokens = await redeemCode(location?.searchParams.get('code') ?? '', request.verifier);
  return { browser, tokens, nonce: request.nonce };
}

async function fetchKids(): Promise<string[]> {
  const jwks = (await (await fetch(String(metadata.jwks_uri))).json()) as { keys: { kid: string }[] };
  return jwks.keys.map((key) => key.kid);
}

describe('demo provider', () => {
  it('serves a discovery document for its own issuer that requires S256', () => {
    expect(provider.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(metadata.issuer).toBe(provider.issuer);
    expect(metadata.code_challenge_methods_supported).toEqual(['S256']);
    expect(metadata.end_session_endpoint).toBe(`${provider.issuer}/session/end`);
    expect(metadata.scopes_supported).toEqual(expect.arrayContaining(['openid', 'email', 'profile']));
  });

  it('renders its own login form with the demo credentials', async () => {
    const { html } = await openLoginPage(createBrowser(), startAuthorization().url);
    expect(html).toContain('<h1>Gatehouse demo sign-in</h1>');
    expect(html).toContain('name="email"');
    expect(html).toContain('name="password"');
    expect(html).toContain('<button type="submit">Sign in</button>');
    expect(html).toContain('demo@example.com');
  });

  it('refuses a wrong password and stays on the form', async () => {
    const browser = createBrowser();
    const { action } = await openLoginPage(browser, startAuthorization().url);
    const refused = await postLogin(browser, action, DEMO_USER.email, 'not-the-password');
    expect(refused.status).toBe(403);
    expect(refused.headers.get('location')).toBeNull();
    expect(await refused.text()).toContain('do not match');
  });

  it('refuses an authorization request without PKCE', async () => {
    const request = startAuthorization();
    const url = new URL(request.url);
    url.searchParams.delete('code_challenge');
    url.searchParams.delete('code_challenge_method');
    const { location } = await follow(createBrowser(), url.href);
    expect(location?.searchParams.get('error')).toBe('invalid_request');
  });

  it('completes the code flow and issues an ID token verifiable against its JWKS', async () => {
    const { tokens, nonce } = await signIn();
    const jwks = createRemoteJWKSet(new URL(String(metadata.jwks_uri)));
    const { payload, protectedHeader } = await jwtVerify(tokens.id_token, jwks, {
      issuer: provider.issuer,
      audience: CLIENT.client_id,
    });
    expect(protectedHeader.alg).toBe('RS256');
    expect(payload).toMatchObject({
      sub: DEMO_USER.sub,
      email: DEMO_USER.email,
      email_verified: true,
      name: DEMO_USER.name,
      nonce,
    });
    expect((payload.exp ?? 0) - (payload.iat ?? 0)).toBe(120);
    expect(tokens.refresh_token).toBeTypeOf('string');
  });

  it('signs with a new key after rotation and drops the old key from the JWKS', async () => {
    const before = await signIn();
    const oldKid = decodeProtectedHeader(before.tokens.id_token).kid;
    await provider.rotateSigningKey();

    const kids = await fetchKids();
    expect(kids).not.toContain(oldKid);
    const { tokens } = await signIn();
    const newKid = decodeProtectedHeader(tokens.id_token).kid;
    expect(newKid).not.toBe(oldKid);
    expect(kids).toContain(newKid);
    const jwks = createRemoteJWKSet(new URL(String(metadata.jwks_uri)));
    await expect(jwtVerify(tokens.id_token, jwks, { issuer: provider.issuer })).resolves.toBeTruthy();
  });

  it('keeps the browser signed in across a key rotation', async () => {
    const { browser } = await signIn();
    await provider.rotateSigningKey();
    const { location } = await follow(browser, startAuthorization().url);
    expect(location?.searchParams.get('code')).toBeTruthy();
  });

  it('signs out without a confirmation click and returns to post_logout_redirect_uri', async () => {
    const { browser, tokens } = await signIn();
    const logout = new URL(String(metadata.end_session_endpoint));
    logout.search = new URLSearchParams({
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: CLIENT.post_logout_redirect_uris[0] ?? '',
      state: 'bye',
    }).toString();
    const { location } = await follow(browser, logout.href);
    expect(location?.href).toBe(`${CLIENT.post_logout_redirect_uris[0]}?state=bye`);

    const { html } = await openLoginPage(browser, startAuthorization().url);
    expect(html).toContain('Gatehouse demo sign-in');
  });
});
