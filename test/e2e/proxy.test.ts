import { createHash, randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import { freePort } from '../support/ports.js';
import { createKey } from '../support/keys.js';
import { sendRequest } from '../support/raw-http.js';
import { readAllEvents } from '../support/sse.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, startGateway, type FaultyStack } from '../support/stack.js';

const TEST_SUBJECT = 'test-user-1';
const TEST_EMAIL = 'ada@example.test';
const UPSTREAM_KEY = 'sk-upstream-test-key-123';
const LOOPBACK = /^(::ffff:)?127\.0\.0\.1$/;

/** What the sample platform's `/echo/*` answers: the request exactly as it reached the platform. */
interface Echo {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

interface OpenAiError {
  error: { message: string; type: string; code: string | null; param: null };
}

function sessionCookie(session: string, others = ''): string {
  return `gatehouse_session=${session}${others ? `; ${others}` : ''}`;
}

/** Headers of a same-origin browser request; state-changing methods need them (CSRF check). */
function fromGateway(stack: FaultyStack, session: string, extra: Record<string, string> = {}): Record<string, string> {
  return { cookie: sessionCookie(session), origin: stack.url, ...extra };
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

interface ByteEchoUpstream {
  url: string;
  /** Request targets received, oldest first. */
  targets: string[];
  close(): Promise<void>;
}

/**
 * A platform stand-in that answers before the request body has ended: headers at once, then each
 * body byte as it arrives. `/status/NNN` answers with that status. Used where the sample
 * platform's text bodies cannot show byte-exactness or streaming of the upload.
 */
async function startByteEchoUpstream(): Promise<ByteEchoUpstream> {
  const targets: string[] = [];
  const server = createServer((request, response) => {
    targets.push(request.url ?? '');
    const status = /^\/status\/(\d{3})$/.exec(request.url ?? '')?.[1];
    if (status === '302') {
      response.writeHead(302, { location: '/elsewhere?from=upstream' }).end();
      return;
    }
    response.writeHead(Number(status ?? 200), {
      'content-type': 'application/octet-stream',
      'x-upstream-says': 'hello',
      'x-received-content-length': request.headers['content-length'] ?? 'none',
    });
    response.flushHeaders();
    request.pipe(response);
  });
  return { url: await listen(server), targets, close: () => closeServer(server) };
}

/** A server that must never be reached: it stands for a host an attacker names. */
async function startDecoy(): Promise<{
  url: string;
  host: string;
  hits: { url: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}> {
  const hits: { url: string; headers: IncomingHttpHeaders }[] = [];
  const server = createServer((request, response) => {
    hits.push({ url: request.url ?? '', headers: request.headers });
    response.end('decoy');
  });
  const url = await listen(server);
  return { url, host: new URL(url).host, hits, close: () => closeServer(server) };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((error) => (error ? reject(error) : resolve()));
    server.closeAllConnections();
  });
}

let stack: FaultyStack;
let session: string;
let browser: Browserless;

beforeAll(async () => {
  stack = await startFaultyStack();
  browser = new Browserless();
  session = await signInForSession(stack, browser);
});
afterAll(() => stack.close());

async function echo(path: string, init: RequestInit = {}): Promise<Echo> {
  const response = await fetch(`${stack.url}${path}`, init);
  expect(response.status).toBe(200);
  return (await response.json()) as Echo;
}

function platformSaw(marker: string): boolean {
  return stack.platform.requests.some((request) => request.url.includes(marker));
}

describe('a request that is not signed in', () => {
  it('sends a browser GET to sign in, carrying the original path and query', async () => {
    const asked = '/v1/models?x=1&x=2&q=hello%20world';
    const response = await fetch(`${stack.url}${asked}`, {
      headers: { accept: 'text/html,application/xhtml+xml' },
      redirect: 'manual',
    });
    expect(response.status).toBe(302);
    expect(response.headers.get('location')).toBe(`/v1/auth/login?return_to=${encodeURIComponent(asked)}`);
  });

  it.each(['GET', 'POST'])('answers a program %s with an OpenAI-shaped 401 JSON error', async (method) => {
    const response = await fetch(`${stack.url}/v1/chat/completions`, {
      method,
      headers: { accept: 'application/json', 'content-type': 'application/json' },
      ...(method === 'POST' ? { body: '{"messages":[]}' } : {}),
      redirect: 'manual',
    });
    expect(response.status).toBe(401);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(response.headers.get('www-authenticate')).toBe('Bearer');
    const text = await response.text();
    expect(text).not.toMatch(/<html|<!doctype/i);
    expect(JSON.parse(text)).toEqual({
      error: { message: expect.any(String), type: 'authentication_error', code: 'missing_credentials', param: null },
    });
  });

  it('answers a POST that accepts HTML with 401 JSON, not a redirect', async () => {
    const response = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { accept: 'text/html', 'content-type': 'application/json' },
      body: '{"messages":[]}',
      redirect: 'manual',
    });
    expect(response.status).toBe(401);
    expect(response.headers.get('location')).toBeNull();
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(((await response.json()) as OpenAiError).error.type).toBe('authentication_error');
  });

  it('never forwards a request whose only credential is a Bearer token or an unknown session', async () => {
    const marker = `unauthenticated-${Date.now()}`;
    const bearer = await fetch(`${stack.url}/echo/${marker}`, { headers: { authorization: 'Bearer whatever' } });
    const forged = await fetch(`${stack.url}/echo/${marker}`, {
      headers: { cookie: sessionCookie('forged-session-id') },
    });
    expect([bearer.status, forged.status]).toEqual([401, 401]);
    expect(platformSaw(marker)).toBe(false);
  });
});

describe('a signed-in request reaches the platform unchanged', () => {
  it.each(['POST', 'PUT', 'PATCH', 'DELETE'])('forwards %s with its method, path, query and body', async (method) => {
    const body = JSON.stringify({ method, note: 'naïve ☃ text' });
    const seen = await echo(`/echo/items/42?x=1`, {
      method,
      headers: fromGateway(stack, session, { 'content-type': 'application/json' }),
      body,
    });
    expect(seen).toMatchObject({ method, url: '/echo/items/42?x=1', body });
    expect(seen.headers['content-type']).toBe('application/json');
  });

  it('keeps repeated query keys, encoded characters and encoded slashes as sent', async () => {
    const target = '/echo/a%2Fb/caf%C3%A9?x=1&x=2&y=%2F%3F%26%3D&empty=&flag&plus=a+b&q=hello%20world';
    const response = await sendRequest(stack.url, { path: target, headers: ['Cookie', sessionCookie(session)] });
    expect(response.status).toBe(200);
    expect((JSON.parse(response.body.toString()) as Echo).url).toBe(target);
  });

  // The gateway's own invalid_json answer looks the same: only the platform's record tells them apart.
  it('passes the platform 400 for invalid JSON back unchanged', async () => {
    const received = stack.platform.requests.length;
    const response = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: fromGateway(stack, session, { 'content-type': 'application/json' }),
      body: '{"messages": [',
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as OpenAiError).error.type).toBe('invalid_request_error');
    expect(stack.platform.requests.slice(received).map(({ url, body }) => ({ url, body }))).toEqual([
      { url: '/v1/chat/completions', body: '{"messages": [' },
    ]);
  });

  it('passes the platform 404 for an unknown path back unchanged', async () => {
    const response = await fetch(`${stack.url}/v1/no-such-thing`, { headers: { cookie: sessionCookie(session) } });
    expect(response.status).toBe(404);
    expect(((await response.json()) as OpenAiError).error.message).toBe('No route for GET /v1/no-such-thing.');
  });

  it('passes a platform 500 back unchanged', async () => {
    // A prompt that cannot become a string makes the sample platform fail with a TypeError.
    const response = await fetch(`${stack.url}/v1/completions`, {
      method: 'POST',
      headers: fromGateway(stack, session, { 'content-type': 'application/json' }),
      body: '{"prompt": {"toString": 1}}',
    });
    expect(response.status).toBe(500);
    expect(((await response.json()) as OpenAiError).error.type).toBe('server_error');
  });
});

describe('bodies and statuses, byte for byte', () => {
  let byteStack: FaultyStack;
  let byteSession: string;
  let upstream: ByteEchoUpstream;
  beforeAll(async () => {
    upstream = await startByteEchoUpstream();
    byteStack = await startFaultyStack({ gateway: { upstream: upstream.url } });
    byteSession = await signInForSession(byteStack, new Browserless());
  });
  afterAll(async () => {
    await byteStack.close();
    await upstream.close();
  });

  it('forwards a binary body and its answer byte for byte', async () => {
    const bytes = new Uint8Array(256 * 4).map((_, index) => index % 256);
    const response = await fetch(`${byteStack.url}/upload`, {
      method: 'POST',
      headers: fromGateway(byteStack, byteSession, { 'content-type': 'application/octet-stream' }),
      body: bytes,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('x-received-content-length')).toBe(String(bytes.length));
    expect(Buffer.from(await response.arrayBuffer()).equals(Buffer.from(bytes))).toBe(true);
  });

  it('forwards a 3 MB body, beyond any buffering limit, intact', async () => {
    const bytes = randomBytes(3 * 1024 * 1024);
    const response = await fetch(`${byteStack.url}/upload`, {
      method: 'PUT',
      headers: fromGateway(byteStack, byteSession, { 'content-type': 'application/octet-stream' }),
      body: bytes,
    });
    expect(response.status).toBe(200);
    const answer = new Uint8Array(await response.arrayBuffer());
    expect(answer.length).toBe(bytes.length);
    expect(sha256(answer)).toBe(sha256(bytes));
  });

  it('streams the upload: the platform answers the first part before the client sends the rest', async () => {
    const first = 'first-part-' + 'a'.repeat(64 * 1024);
    const rest = 'rest-' + 'b'.repeat(64 * 1024);
    const received = await new Promise<string>((resolve, reject) => {
      const port = Number(new URL(byteStack.url).port);
      const outgoing = httpRequest({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/upload',
        headers: {
          cookie: sessionCookie(byteSession),
          origin: byteStack.url,
          'content-type': 'application/octet-stream',
          'transfer-encoding': 'chunked',
        },
      });
      // A gateway that buffered the body would wait for the end the client is still holding back.
      const stalled = setTimeout(
        () => reject(new Error('no answer before the body ended: the upload was buffered')),
        5_000,
      );
      outgoing.on('error', reject);
      outgoing.on('response', (response) => {
        let text = '';
        let sentRest = false;
        response.setEncoding('utf8');
        response.on('data', (part: string) => {
          text += part;
          if (!sentRest && text.length >= first.length) {
            sentRest = true;
            clearTimeout(stalled);
            outgoing.end(rest);
          }
        });
        response.on('end', () => resolve(text));
      });
      outgoing.write(first);
    });
    expect(received).toBe(first + rest);
  });

  it.each([201, 202, 404, 409, 500, 503])('passes an upstream %i back unchanged', async (status) => {
    const response = await fetch(`${byteStack.url}/status/${status}`, {
      headers: { cookie: sessionCookie(byteSession) },
    });
    expect(response.status).toBe(status);
    expect(response.headers.get('x-upstream-says')).toBe('hello');
  });

  it('passes an upstream redirect back without following it', async () => {
    const response = await fetch(`${byteStack.url}/status/302`, {
      headers: { cookie: sessionCookie(byteSession) },
      redirect: 'manual',
    });
    expect(response.status).toBe(302);
    expect(response.headers.get('location')).toBe('/elsewhere?from=upstream');
    expect(upstream.targets).not.toContain('/elsewhere?from=upstream');
  });
});

/** Headers a client might send to pass itself off as someone else, or to change what URL was asked for. */
const spoofed: [name: string, value: string][] = [
  ['X-Forwarded-User', 'admin'],
  ['x-forwarded-email', 'admin@evil.example'],
  ['X_Forwarded_User', 'admin'],
  ['X-FORWARDED-USER', 'admin'],
  ['X-Forwarded-Key-Id', 'key_admin'],
  ['X-Forwarded-For', '1.2.3.4'],
  ['X-Forwarded-Host', 'evil.example'],
  ['X-Forwarded-Proto', 'gopher'],
  ['Forwarded', 'for=1.2.3.4;host=evil.example'],
  ['X-Real-IP', '1.2.3.4'],
  ['X-Client-IP', '1.2.3.4'],
  ['True-Client-IP', '1.2.3.4'],
  ['X-Remote-User', 'admin'],
  ['Remote-User', 'admin'],
  ['Remote_User', 'admin'],
  ['X-Auth-Request-User', 'admin'],
  ['X-Auth-Request-Email', 'admin@evil.example'],
  ['X-Gatehouse-User', 'admin'],
  ['X-User', 'admin'],
  ['X-Original-URL', '/admin'],
  ['X-Original-URI', '/admin'],
  ['X-Rewrite-URL', '/admin'],
  ['Proxy-Authorization', 'Basic YWRtaW46YWRtaW4='],
  ['Host', 'evil.example'],
];

/** Every header value the platform received, as one string to search for anything the client planted. */
function allValues(headers: IncomingHttpHeaders): string {
  return Object.values(headers).flat().join('\n');
}

describe('identity headers come from the gateway only', () => {
  async function echoWithHeaders(headers: string[]): Promise<Echo> {
    const response = await sendRequest(stack.url, {
      path: '/echo/whoami',
      headers: ['Cookie', sessionCookie(session), ...headers],
    });
    expect(response.status).toBe(200);
    return JSON.parse(response.body.toString()) as Echo;
  }

  function expectGatewayIdentity(seen: Echo): void {
    expect(seen.headers['x-forwarded-user']).toBe(TEST_SUBJECT);
    expect(seen.headers['x-forwarded-email']).toBe(TEST_EMAIL);
    expect(seen.headers['x-forwarded-for']).toMatch(LOOPBACK);
    expect(seen.headers['x-forwarded-host']).toBe(new URL(stack.url).host);
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-key-id']).toBeUndefined();
    expect(seen.headers.authorization).toBeUndefined();
  }

  it.each(spoofed)('ignores a client-sent %s', async (name, value) => {
    const seen = await echoWithHeaders([name, value]);
    expectGatewayIdentity(seen);
    expect(allValues(seen.headers)).not.toContain(value);
    // The gateway sets its own Host and X-Forwarded-*; any other of these names must not arrive at all.
    const lower = name.toLowerCase();
    if (lower !== 'host' && !lower.startsWith('x-forwarded-')) expect(Object.keys(seen.headers)).not.toContain(lower);
  });

  it('ignores all of them sent together, repeated and in mixed case', async () => {
    const seen = await echoWithHeaders(spoofed.flat());
    expectGatewayIdentity(seen);
    expect(allValues(seen.headers)).not.toMatch(/admin|1\.2\.3\.4|evil|whatever|gopher/);
    expect(
      Object.keys(seen.headers)
        .filter((name) => /forwarded|remote|auth|real-ip|client-ip|original|rewrite|x-user|gatehouse/.test(name))
        .sort(),
    ).toEqual(['x-forwarded-email', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-user']);
  });

  it('keeps its identity headers when the client lists them in Connection', async () => {
    const seen = await echoWithHeaders([
      'Connection',
      'keep-alive, X-Forwarded-User, X-Forwarded-Email, X-Forwarded-For',
    ]);
    expectGatewayIdentity(seen);
  });

  it('refuses a signed-in request that also carries an unknown Bearer key, without forwarding it', async () => {
    const marker = `bearer-with-session-${Date.now()}`;
    const response = await sendRequest(stack.url, {
      path: `/echo/${marker}`,
      headers: ['Cookie', sessionCookie(session), 'Authorization', 'Bearer whatever'],
    });
    expect(response.status).toBe(401);
    expect((JSON.parse(response.body.toString()) as OpenAiError).error.code).toBe('invalid_api_key');
    expect(platformSaw(marker)).toBe(false);
  });

  it("forwards an API-key request with the key's owner and id, never the key itself", async () => {
    const { id, key } = await createKey(stack, browser, { name: 'proxy test' });
    const response = await sendRequest(stack.url, {
      path: '/echo/with-key',
      headers: ['Authorization', `Bearer ${key}`, 'X-Forwarded-Key-Id', 'key_admin', 'X-Forwarded-User', 'admin'],
    });
    expect(response.status).toBe(200);
    const seen = JSON.parse(response.body.toString()) as Echo;
    expect(seen.headers['x-forwarded-user']).toBe(TEST_SUBJECT);
    expect(seen.headers['x-forwarded-key-id']).toBe(id);
    expect(seen.headers.authorization).toBeUndefined();
    expect(allValues(seen.headers)).not.toMatch(new RegExp(`${key}|admin`));
  });

  it("removes the gateway's cookies and keeps the platform's", async () => {
    const seen = await echoWithHeaders([]);
    expect(seen.headers.cookie).toBeUndefined();
    const withOthers = await sendRequest(stack.url, {
      path: '/echo/cookies',
      headers: ['Cookie', `theme=dark; ${sessionCookie(session)}; gatehouse_login=stale-flow; lang=en`],
    });
    const echoed = JSON.parse(withOthers.body.toString()) as Echo;
    expect(echoed.headers.cookie).toBe('theme=dark; lang=en');
    expect(echoed.headers.cookie).not.toContain(session);
  });
});

describe('with an upstream API key configured', () => {
  let keyStack: FaultyStack;
  let keySession: string;
  let keyBrowser: Browserless;
  beforeAll(async () => {
    keyStack = await startFaultyStack({ gateway: { upstream_api_key: UPSTREAM_KEY } });
    keyBrowser = new Browserless();
    keySession = await signInForSession(keyStack, keyBrowser);
  });
  afterAll(() => keyStack.close());

  it('sends the platform the upstream key on a signed-in request', async () => {
    const response = await sendRequest(keyStack.url, {
      path: '/echo/key',
      headers: ['Cookie', sessionCookie(keySession)],
    });
    expect(response.status).toBe(200);
    const seen = JSON.parse(response.body.toString()) as Echo;
    expect(seen.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(seen.headers['x-forwarded-user']).toBe(TEST_SUBJECT);
  });

  it("sends the platform the upstream key instead of the client's API key", async () => {
    const { key } = await createKey(keyStack, keyBrowser, { name: 'proxy test' });
    const response = await sendRequest(keyStack.url, {
      path: '/echo/key',
      headers: ['Authorization', `Bearer ${key}`],
    });
    expect(response.status).toBe(200);
    const seen = JSON.parse(response.body.toString()) as Echo;
    expect(seen.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(allValues(seen.headers)).not.toContain(key);
  });

  it.each([
    ['a request-target starting with //host', (host: string) => `//${host}/v1/models`],
    ['an absolute-form request-target', (host: string) => `http://${host}/v1/models`],
  ])('never sends the key to a host named in %s', async (_label, target) => {
    const decoy = await startDecoy();
    try {
      const response = await sendRequest(keyStack.url, {
        path: target(decoy.host),
        headers: ['Cookie', sessionCookie(keySession)],
      });
      expect(decoy.hits.map((hit) => ({ url: hit.url, authorization: hit.headers.authorization }))).toEqual([]);
      expect(response.body.toString()).not.toBe('decoy');
    } finally {
      await decoy.close();
    }
  });
});

describe('cross-site requests with the session cookie (CSRF)', () => {
  async function post(marker: string, headers: Record<string, string>): Promise<Response> {
    return fetch(`${stack.url}/echo/${marker}`, {
      method: 'POST',
      headers: { cookie: sessionCookie(session), 'content-type': 'application/json', ...headers },
      body: '{"transfer":"everything"}',
    });
  }

  async function expectRefused(response: Response, marker: string): Promise<void> {
    expect(response.status).toBe(403);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await response.json()).toEqual({
      error: { message: expect.any(String), type: 'permission_error', code: 'cross_origin_request', param: null },
    });
    expect(platformSaw(marker)).toBe(false);
  }

  it('refuses a POST from another origin before it reaches the platform', async () => {
    const marker = `csrf-evil-origin-${Date.now()}`;
    await expectRefused(await post(marker, { origin: 'http://evil.example' }), marker);
  });

  it.each([
    ['Origin: null (sandboxed frame, data: URL)', { origin: 'null' }],
    ['an Origin on the same host but another port', { origin: 'http://127.0.0.1:1' }],
    ['an Origin naming the gateway as localhost', { origin: 'http://localhost' }],
    ['an Origin with a trailing slash', { origin: 'STACK/' }],
    ['no Origin and Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ['no Origin and Sec-Fetch-Site: same-site (a sibling subdomain)', { 'sec-fetch-site': 'same-site' }],
    ['no Origin and no Sec-Fetch-Site', {}],
  ])('refuses a POST with %s', async (_label, headers: Record<string, string>) => {
    const marker = `csrf-${Math.random().toString(36).slice(2)}`;
    const resolved = Object.fromEntries(
      Object.entries(headers).map(([name, value]) => [name, value.replace('STACK', stack.url)]),
    );
    await expectRefused(await post(marker, resolved), marker);
  });

  it.each(['PUT', 'PATCH', 'DELETE'])('refuses a cross-origin %s', async (method) => {
    const marker = `csrf-${method}-${Date.now()}`;
    const response = await fetch(`${stack.url}/echo/${marker}`, {
      method,
      headers: { cookie: sessionCookie(session), origin: 'http://evil.example' },
    });
    await expectRefused(response, marker);
  });

  it("lets a POST through whose Origin is the gateway's", async () => {
    const marker = `same-origin-${Date.now()}`;
    const response = await post(marker, { origin: stack.url });
    expect(response.status).toBe(200);
    expect(platformSaw(marker)).toBe(true);
  });

  it('lets a POST through with no Origin but Sec-Fetch-Site: same-origin', async () => {
    const marker = `fetch-site-${Date.now()}`;
    const response = await post(marker, { 'sec-fetch-site': 'same-origin' });
    expect(response.status).toBe(200);
    expect(platformSaw(marker)).toBe(true);
  });

  it('lets a program POST with an API key and no Origin through (no cookie, so no CSRF)', async () => {
    const { key } = await createKey(stack, browser, { name: 'proxy test' });
    const marker = `api-key-post-${Date.now()}`;
    const response = await fetch(`${stack.url}/echo/${marker}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: '{}',
    });
    expect(response.status).toBe(200);
    expect(platformSaw(marker)).toBe(true);
  });

  it('lets a cross-origin GET through (a safe method)', async () => {
    const response = await fetch(`${stack.url}/echo/cross-origin-get`, {
      headers: { cookie: sessionCookie(session), origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' },
    });
    expect(response.status).toBe(200);
  });

  it('refuses a cross-origin POST to logout and the session keeps working', async () => {
    const browser = new Browserless();
    const own = await signInForSession(stack, browser);
    const logout = await fetch(`${stack.url}/v1/auth/logout`, {
      method: 'POST',
      headers: { cookie: sessionCookie(own), origin: 'http://evil.example' },
      redirect: 'manual',
    });
    expect(logout.status).toBe(403);
    expect(((await logout.json()) as OpenAiError).error.type).toBe('permission_error');
    expect(logout.headers.getSetCookie().some((line) => line.startsWith('gatehouse_session='))).toBe(false);
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
  });
});

describe('streaming', () => {
  it('passes server-sent events through one by one as the platform writes them', async () => {
    // The platform writes an event every DELAY_MS. An event the gateway held back would arrive with
    // the next one (a gap near 0). Platform, gateway and reader share this process: a stall of its
    // event loop delays one event and shortens the gap after it by as much (loaded runs saw 200 ms
    // stalls bring two events together at DELAY_MS = 200), so each gap must be at least
    // DELAY_MS - SLACK_MS, with DELAY_MS long enough that such a stall does not close a gap.
    const CHUNKS = 5;
    const DELAY_MS = 500;
    const SLACK_MS = 250;
    const response = await fetch(`${stack.url}/slow-stream?chunks=${CHUNKS}&delayMs=${DELAY_MS}`, {
      headers: { cookie: sessionCookie(session) },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const { events: frames } = await readAllEvents(response);
    const events = frames.filter((frame) => frame.data !== '[DONE]');
    expect(events.map((frame) => (JSON.parse(frame.data) as { index: number }).index)).toEqual([0, 1, 2, 3, 4]);
    const gaps = events.slice(1).map((event, index) => event.at - events[index]!.at);
    const span = events.at(-1)!.at - events[0]!.at;
    console.log(
      `event gaps ${gaps.map((gap) => gap.toFixed(0)).join(', ')} ms (bound ${DELAY_MS - SLACK_MS} ms); ` +
        `first to last ${span.toFixed(0)} ms (bound ${(CHUNKS - 1) * DELAY_MS - SLACK_MS} ms)`,
    );
    expect(span).toBeGreaterThanOrEqual((CHUNKS - 1) * DELAY_MS - SLACK_MS);
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(DELAY_MS - SLACK_MS);
  });

  it('streams a chat completion as text/event-stream ending in [DONE]', async () => {
    const response = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: fromGateway(stack, session, { 'content-type': 'application/json' }),
      body: JSON.stringify({
        model: 'demo-small',
        stream: true,
        messages: [{ role: 'user', content: 'one two three four five six' }],
      }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const { events: frames, reads } = await readAllEvents(response);
    expect(frames.at(-1)!.data).toBe('[DONE]');
    const text = frames
      .slice(0, -1)
      .map(
        (frame) =>
          (JSON.parse(frame.data) as { choices: { delta: { content?: string } }[] }).choices[0]!.delta.content ?? '',
      )
      .join('');
    expect(text).toBe('You said: one two three four five six');
    expect(reads).toBeGreaterThan(1);
  });

  it('stops the platform stream within 2 s when the client goes away', async () => {
    const abortedBefore = stack.platform.abortedStreams();
    const aborter = new AbortController();
    const response = await fetch(`${stack.url}/slow-stream?chunks=50&delayMs=100`, {
      headers: { cookie: sessionCookie(session) },
      signal: aborter.signal,
    });
    const reader = response.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    expect(stack.platform.activeStreams()).toBe(1);
    aborter.abort();
    await reader.closed.catch(() => undefined);
    await expect
      .poll(
        () => ({ aborted: stack.platform.abortedStreams() - abortedBefore, active: stack.platform.activeStreams() }),
        {
          timeout: 2_000,
        },
      )
      .toEqual({ aborted: 1, active: 0 });
    expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
  });
});

describe('logout', () => {
  it("sends the browser to the provider's end-session endpoint with the ID token hint and the website", async () => {
    const browser = new Browserless();
    const own = await signInForSession(stack, browser);
    const idToken = stack.provider.lastIdToken;
    const logout = await browser.fetch(`${stack.url}/v1/auth/logout`);
    expect(logout.status).toBe(302);
    const location = new URL(logout.headers.get('location')!);
    expect(location.origin + location.pathname).toBe(`${stack.provider.issuer}/logout`);
    expect(location.searchParams.get('id_token_hint')).toBe(idToken);
    expect(location.searchParams.get('post_logout_redirect_uri')).toBe(stack.url);

    const cleared = logout.headers.getSetCookie().find((line) => line.startsWith('gatehouse_session='));
    expect(cleared).toMatch(/^gatehouse_session=;/);
    expect(cleared).toMatch(/Max-Age=0|Expires=Thu, 01 Jan 1970/i);
    expect(browser.cookie(stack.url, 'gatehouse_session')).toBeUndefined();

    const atProvider = await browser.fetch(location.href);
    expect(atProvider.status).toBe(302);
    const back = new URL(atProvider.headers.get('location')!);
    expect(back.origin + back.pathname).toBe(new URL(stack.url).href);
    expect(back.searchParams.get('state')).toBe(location.searchParams.get('state'));
    expect(stack.provider.logoutRequests.at(-1)).toMatchObject({
      idTokenHint: idToken,
      postLogoutRedirectUri: stack.url,
    });

    const replayed = await fetch(`${stack.url}/v1/auth/me`, { headers: { cookie: sessionCookie(own) } });
    expect(replayed.status).toBe(401);
    const proxied = await fetch(`${stack.url}/echo/after-logout`, { headers: { cookie: sessionCookie(own) } });
    expect(proxied.status).toBe(401);
  });
});

describe('when the platform is down', () => {
  let downStack: FaultyStack;
  let downSession: string;
  beforeAll(async () => {
    downStack = await startFaultyStack({ gateway: { upstream: `http://127.0.0.1:${await freePort()}` } });
    downSession = await signInForSession(downStack, new Browserless());
  });
  afterAll(() => downStack.close());

  it('answers 502 in the OpenAI error shape and keeps serving', async () => {
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const response = await fetch(`${downStack.url}/v1/models`, { headers: { cookie: sessionCookie(downSession) } });
      expect(response.status).toBe(502);
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
      expect(await response.json()).toEqual({
        error: { message: expect.any(String), type: 'api_error', code: 'upstream_unavailable', param: null },
      });
    }
    const health = await fetch(`${downStack.url}/healthz`);
    expect(health.status).toBe(200);
  });
});

describe('when the platform breaks off a short answer', () => {
  let brokenStack: FaultyStack;
  let brokenSession: string;
  let platform: NetServer;
  beforeAll(async () => {
    // Promises 100 bytes of JSON, sends 12 and hangs up: a platform process that died mid-answer.
    platform = createNetServer((socket) => {
      socket.once('data', () => {
        socket.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"partial":1');
      });
    });
    await new Promise<void>((resolve) => platform.listen(0, '127.0.0.1', resolve));
    const { port } = platform.address() as AddressInfo;
    brokenStack = await startFaultyStack({ gateway: { upstream: `http://127.0.0.1:${port}` } });
    brokenSession = await signInForSession(brokenStack, new Browserless());
  });
  afterAll(async () => {
    await brokenStack.close();
    await new Promise((resolve) => platform.close(resolve));
  });

  it('answers 502 in the OpenAI error shape instead of a truncated 200, and keeps serving', async () => {
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const response = await fetch(`${brokenStack.url}/v1/models`, {
        headers: { cookie: sessionCookie(brokenSession) },
      });
      expect(response.status).toBe(502);
      expect(await response.json()).toEqual({
        error: { message: expect.any(String), type: 'api_error', code: 'upstream_unavailable', param: null },
      });
    }
    expect((await fetch(`${brokenStack.url}/healthz`)).status).toBe(200);
  });
});

describe('health', () => {
  it('answers /healthz with 200', async () => {
    const response = await fetch(`${stack.url}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok' });
  });

  it('answers /readyz with 200 once the database and the provider are reachable', async () => {
    const response = await fetch(`${stack.url}/readyz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: 'ready', checks: { database: 'ok', provider: 'ok' } });
  });

  it('keeps no metrics when gateway.metrics_port is unset: nothing could read them', () => {
    expect(stack.gateway.metrics).toBeUndefined();
  });
});

describe("which paths are the gateway's own", () => {
  it('answers an unknown path under /v1/auth/ itself with an OpenAI-shaped 404, never the platform', async () => {
    const response = await fetch(`${stack.url}/v1/auth/no-such-page?marker=own-404`, {
      headers: { cookie: sessionCookie(session) },
    });
    expect(response.status).toBe(404);
    expect(((await response.json()) as OpenAiError).error).toMatchObject({
      type: 'invalid_request_error',
      code: 'not_found',
    });
    expect(platformSaw('own-404')).toBe(false);
  });

  it('serves /healthz itself when it carries a query string', async () => {
    const response = await fetch(`${stack.url}/healthz?probe=1`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok' });
  });

  it('refuses a method it does not forward with 405 and Allow, before identifying anyone', async () => {
    const response = await sendRequest(stack.url, {
      method: 'PROPFIND',
      path: '/echo/propfind-marker',
      headers: ['Cookie', sessionCookie(session)],
    });
    expect(response.status).toBe(405);
    expect(response.headers.allow).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
    expect((JSON.parse(response.body.toString()) as OpenAiError).error.code).toBe('method_not_allowed');
    expect(platformSaw('propfind-marker')).toBe(false);
  });
});

describe('behind a trusted proxy', () => {
  let proxied: FaultyStack;
  let proxiedSession: string;

  beforeAll(async () => {
    proxied = await startFaultyStack({ gateway: { trusted_proxies: ['127.0.0.1', '::1'] } });
    proxiedSession = await signInForSession(proxied, new Browserless());
  });
  afterAll(() => proxied.close());

  it("tells the platform the client address the proxy saw, the proxy's own entry counting", async () => {
    const response = await fetch(`${proxied.url}/echo/behind-proxy`, {
      headers: {
        cookie: sessionCookie(proxiedSession),
        'x-forwarded-for': '198.51.100.7, 203.0.113.9',
        'x-forwarded-proto': 'http, https',
      },
    });
    expect(response.status).toBe(200);
    const seen = (await response.json()) as Echo;
    expect(seen.headers['x-forwarded-for']).toBe('203.0.113.9');
  });

  it('takes the scheme from a trusted proxy when no website is configured to say it', async () => {
    const open = await startGateway(() => ({
      auth: { disable_auth: true },
      gateway: { upstream: stack.platform.url, trusted_proxies: ['127.0.0.1', '::1'] },
    }));
    try {
      const response = await fetch(`${open.url}/echo/scheme`, { headers: { 'x-forwarded-proto': 'http, https' } });
      expect(((await response.json()) as Echo).headers['x-forwarded-proto']).toBe('https');
    } finally {
      await open.close();
    }
  });

  it('starts with every address trusted (0.0.0.0/0 and ::/0) and believes the forwarded address', async () => {
    const open = await startGateway(() => ({
      auth: { disable_auth: true },
      gateway: { upstream: stack.platform.url, trusted_proxies: ['0.0.0.0/0', '::/0'] },
    }));
    try {
      const response = await fetch(`${open.url}/echo/everyone-trusted`, {
        headers: { 'x-forwarded-for': '203.0.113.9' },
      });
      expect(((await response.json()) as Echo).headers['x-forwarded-for']).toBe('203.0.113.9');
    } finally {
      await open.close();
    }
  });

  it('believes nothing a direct client says about its address when no proxy is trusted', async () => {
    const seen = await echo('/echo/untrusted-forwarded-for', {
      headers: { cookie: sessionCookie(session), 'x-forwarded-for': '203.0.113.9' },
    });
    expect(seen.headers['x-forwarded-for']).toMatch(LOOPBACK);
  });
});
