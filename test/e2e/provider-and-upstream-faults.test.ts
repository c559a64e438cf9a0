/**
 * The sign-in provider, the platform or the SQLite file misbehaving while the gateway runs. Each
 * failure gets an answer a person or a program can act on (an HTML page for sign-in, OpenAI-shaped
 * JSON for the API), never a crash, and service comes back by itself once the fault is gone.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyCommand } from '../../src/commands/keys.js';
import { loadConfigFromObject } from '../../src/config/index.js';
import { REQUEST_TIMEOUT_SECONDS } from '../../src/oidc/provider.js';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { Browserless } from '../support/browserless.js';
import { startFaultyProvider, type FaultyProvider } from '../support/faulty-provider.js';
import { freePort } from '../support/ports.js';
import { signIn, signInForSession } from '../support/sign-in.js';
import { CLIENT_ID, CLIENT_SECRET, deepMerge, startGateway, type RunningGateway } from '../support/stack.js';
import { expectApiError } from '../support/api-error.js';
import { msUntil } from '../support/wait.js';

interface LogLine {
  level: number;
  msg: string;
  reqId?: string;
}

const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-faults-'));
  tempDirs.push(dir);
  return dir;
}

/** Expects a server-rendered page with this status, and returns its text. */
async function expectPage(response: Response, status: number): Promise<string> {
  const text = await response.text();
  expect(response.status, text.slice(0, 500)).toBe(status);
  expect(response.headers.get('content-type')).toMatch(/^text\/html/);
  return text;
}

function logLines(gateway: RunningGateway): LogLine[] {
  return gateway.logs.flatMap((chunk) =>
    chunk
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as LogLine),
  );
}

/** Everything the sign-in tests need, each part closed exactly once whatever the test did to it. */
interface SignInSetup {
  gateway: RunningGateway;
  platform: SamplePlatform;
  providerPort: number;
  redirectUri: string;
  provider?: FaultyProvider;
  startProvider(): Promise<FaultyProvider>;
  stopProvider(): Promise<void>;
  close(): Promise<void>;
}

/** A gateway whose provider listens on a port chosen in advance, started (or not) by the test. */
async function signInSetup(providerUp: boolean, extra: Record<string, unknown> = {}): Promise<SignInSetup> {
  const [port, providerPort] = [await freePort(), await freePort()];
  const redirectUri = `http://127.0.0.1:${port}/v1/auth/auth`;
  const platform = await startSamplePlatform({ chunkDelayMs: 5 });
  const setup: SignInSetup = {
    gateway: undefined as unknown as RunningGateway,
    platform,
    providerPort,
    redirectUri,
    async startProvider() {
      setup.provider = await startFaultyProvider({
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        redirectUri,
        port: providerPort,
      });
      return setup.provider;
    },
    async stopProvider() {
      const provider = setup.provider;
      setup.provider = undefined;
      await provider?.close();
    },
    async close() {
      await setup.gateway?.close();
      await Promise.all([platform.close(), setup.stopProvider()]);
    },
  };
  if (providerUp) await setup.startProvider();
  setup.gateway = await startGateway(
    (website) =>
      deepMerge(
        {
          powerml: { website },
          auth_provider: {
            client_id: CLIENT_ID,
            client_secret: CLIENT_SECRET,
            server_metadata_url: `http://127.0.0.1:${providerPort}/.well-known/openid-configuration`,
          },
          gateway: { upstream: platform.url },
        },
        extra,
      ),
    port,
  );
  return setup;
}

describe('a provider that is down when the gateway starts', () => {
  let setup: SignInSetup;
  let apiKey: string;

  beforeAll(async () => {
    const dir = tempDir();
    const storage = {
      gateway: { data_dir: join(dir, 'data') },
      database: { url: `sqlite:${join(dir, 'gatehouse.db')}` },
    };
    // A key made by an operator before the gateway starts: checking it needs only the database.
    const config = loadConfigFromObject(
      deepMerge(storage, { auth: { disable_auth: true }, gateway: { upstream: 'http://127.0.0.1:9' } }),
      'test',
    );
    const printed = await createKeyCommand(config, { email: 'ops@example.test', name: 'made before the provider' });
    apiKey = /^gth_\w+$/m.exec(printed)![0];
    setup = await signInSetup(false, storage);
  });
  afterAll(() => setup?.close());

  it('starts, answers /healthz, and reports not ready on /readyz naming the provider', async () => {
    expect((await fetch(`${setup.gateway.url}/healthz`)).status).toBe(200);
    const response = await fetch(`${setup.gateway.url}/readyz`);
    expect(response.status).toBe(503);
    const body = (await response.json()) as { status: string; checks: Record<string, string> };
    expect(body.status).toBe('not_ready');
    expect(body.checks.database).toBe('ok');
    expect(body.checks.provider).toContain(`127.0.0.1:${setup.providerPort}/.well-known/openid-configuration`);
    expect(body.checks.provider).toMatch(/ECONNREFUSED/);
    expect(JSON.stringify(body)).not.toContain(CLIENT_SECRET);
  });

  it('answers sign-in with a 503 page saying sign-in is unavailable, not a redirect', async () => {
    const response = await fetch(`${setup.gateway.url}/v1/auth/login?return_to=%2Fv1%2Fmodels`, {
      headers: { accept: 'text/html' },
      redirect: 'manual',
    });
    const page = await expectPage(response, 503);
    expect(page).toContain('Sign-in is unavailable');
    expect(page).toContain('href="/v1/auth/login?return_to=%2Fv1%2Fmodels"');
    expect(response.headers.get('location')).toBeNull();
    expect(page).not.toContain(CLIENT_SECRET);
  });

  it('keeps serving API keys created before, which do not need the provider', async () => {
    const response = await fetch(`${setup.gateway.url}/echo/provider-down`, {
      headers: { authorization: `Bearer ${apiKey}` },
    });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { headers: Record<string, string> }).headers['x-forwarded-email']).toBe(
      'ops@example.test',
    );
  });

  it('becomes ready and signs people in once the provider comes up on the same port, without a restart', async () => {
    await setup.startProvider();
    // Discovery retries back off from 0.5 s, doubling: the fourth retry comes 7.5 s after start.
    const waited = await msUntil(async () => (await fetch(`${setup.gateway.url}/readyz`)).status === 200, Date.now(), {
      everyMs: 100,
      limitMs: 15_000,
    });
    console.info(`provider back: ready after ${waited} ms (bound 15000 ms)`);
    expect(waited).toBeLessThan(15_000);
    const browser = new Browserless();
    await signInForSession(setup.gateway, browser);
    const me = await browser.fetch(`${setup.gateway.url}/v1/auth/me`);
    expect(me.status).toBe(200);
    expect(((await me.json()) as { email: string }).email).toBe(setup.provider!.email);
  });
});

describe('a provider that goes down in the middle of a sign-in', () => {
  let setup: SignInSetup;
  beforeAll(async () => {
    setup = await signInSetup(true);
  });
  afterAll(() => setup?.close());

  it('shows a page saying sign-in is unavailable when the provider is gone at the callback', async () => {
    const browser = new Browserless();
    const login = await browser.fetch(`${setup.gateway.url}/v1/auth/login`);
    const authorize = await browser.fetch(login.headers.get('location')!);
    const callbackUrl = authorize.headers.get('location')!;
    await setup.stopProvider();

    const page = await expectPage(await browser.fetch(callbackUrl), 503);
    // The code could not be redeemed: the provider is unreachable, not the answer unverifiable.
    expect(page).toContain('Sign-in is unavailable');
    expect(page).toContain('href="/v1/auth/login"');
    expect(browser.cookie(setup.gateway.url, 'gatehouse_session')).toBeUndefined();
    expect((await fetch(`${setup.gateway.url}/healthz`)).status).toBe(200);
  });

  it('signs in again once the provider is back on the same port', async () => {
    if (!setup.provider) await setup.startProvider();
    const browser = new Browserless();
    const { callback } = await signIn(setup.gateway, browser);
    expect(callback.status).toBe(302);
    expect((await browser.fetch(`${setup.gateway.url}/v1/auth/me`)).status).toBe(200);
  });

  it(
    `shows "sign-in is unavailable" when the token endpoint answers after the ${REQUEST_TIMEOUT_SECONDS} s timeout`,
    async () => {
      if (!setup.provider) await setup.startProvider();
      const timeoutMs = REQUEST_TIMEOUT_SECONDS * 1000;
      // Slow enough that only the gateway's timeout can end the wait.
      setup.provider!.tokenDelayMs = timeoutMs + 5_000;
      try {
        const browser = new Browserless();
        const login = await browser.fetch(`${setup.gateway.url}/v1/auth/login`);
        const authorize = await browser.fetch(login.headers.get('location')!);
        const started = Date.now();
        const page = await expectPage(await browser.fetch(authorize.headers.get('location')!), 503);
        const elapsed = Date.now() - started;
        console.info(`token endpoint timeout: answered after ${elapsed} ms (timeout ${timeoutMs} ms)`);
        expect(page).toContain('Sign-in is unavailable');
        expect(elapsed).toBeGreaterThanOrEqual(timeoutMs);
        // The delay is the bound: an answer before it means the gateway gave up, not the provider.
        expect(elapsed).toBeLessThan(setup.provider!.tokenDelayMs);
        expect(browser.cookie(setup.gateway.url, 'gatehouse_session')).toBeUndefined();
      } finally {
        setup.provider!.tokenDelayMs = 0;
      }
    },
    REQUEST_TIMEOUT_SECONDS * 1000 + 20_000,
  );
});

/**
 * A platform that misbehaves on demand: `/reset` sends two events and drops the connection,
 * `/hang` never answers, `/drip` sends an event every `everyMs` for `count` events (the first at
 * once with `immediate=1`), `/ok` is fine.
 */
interface FaultyPlatform {
  url: string;
  /** Connections currently open to it. */
  openSockets(): number;
  close(): Promise<void>;
}

async function startFaultyPlatform(): Promise<FaultyPlatform> {
  const sockets = new Set<Socket>();
  const events = (response: ServerResponse) => {
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    response.flushHeaders();
  };
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://platform.invalid');
    if (url.pathname === '/reset') {
      events(response);
      response.write('data: 1\n\n');
      setTimeout(() => response.write('data: 2\n\n'), 50);
      setTimeout(() => response.socket?.destroy(), 150);
      return;
    }
    if (url.pathname === '/hang') return;
    if (url.pathname === '/drip') {
      const count = Number(url.searchParams.get('count'));
      const everyMs = Number(url.searchParams.get('everyMs'));
      events(response);
      let sent = 0;
      const send = () => {
        response.write(`data: ${++sent}\n\n`);
        if (sent === count) {
          clearInterval(timer);
          response.end('data: [DONE]\n\n');
        }
      };
      const timer = setInterval(send, everyMs);
      if (url.searchParams.get('immediate') === '1') send();
      response.once('close', () => clearInterval(timer));
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    openSockets: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Reads a response body to its end; `error` says how it was cut off, if it was. */
async function readBody(
  response: Response,
): Promise<{ text: string; error?: string; at: number; longestGapMs: number }> {
  const decoder = new TextDecoder();
  let text = '';
  let last = Date.now();
  let longestGapMs = 0;
  try {
    for await (const chunk of response.body!) {
      text += decoder.decode(chunk, { stream: true });
      longestGapMs = Math.max(longestGapMs, Date.now() - last);
      last = Date.now();
    }
    return { text, at: Date.now(), longestGapMs };
  } catch (error) {
    return { text, error: (error as Error).message, at: Date.now(), longestGapMs };
  }
}

/** The gateway's timeouts in these tests: upstream_headers_timeout_seconds and upstream_idle_timeout_seconds. */
const HEADERS_TIMEOUT_MS = 1_000;
const IDLE_TIMEOUT_MS = 1_000;
/**
 * undici checks headers and body timeouts on a tick of 499 ms (lib/util/timers.js), so one fires
 * between its delay and a tick later; never sooner than the delay, less Date.now rounding.
 */
const UNDICI_TICK_MS = 500;
const TIMER_EARLY_MS = 20;
/** How late an answer may come on a loaded machine (two cores shared with other test runs). */
const SCHEDULING_SLACK_MS = 500;
/** When a timeout must have been answered by. */
const HEADERS_TIMEOUT_BY_MS = HEADERS_TIMEOUT_MS + UNDICI_TICK_MS + SCHEDULING_SLACK_MS;
const IDLE_TIMEOUT_BY_MS = IDLE_TIMEOUT_MS + UNDICI_TICK_MS + SCHEDULING_SLACK_MS;
/** A stream sending this often is never idle for long: half the idle timeout is left for stalls. */
const DRIP_EVERY_MS = IDLE_TIMEOUT_MS / 2;
/** A silence longer than the idle timeout can take to fire, so only the timeout ends it in time. */
const SILENCE_MS = 2 * IDLE_TIMEOUT_BY_MS;

const upstreamTimings: string[] = [];
afterAll(() => {
  if (upstreamTimings.length) console.info(`platform timeouts:\n  ${upstreamTimings.join('\n  ')}`);
});

describe('a platform that fails', () => {
  let platform: FaultyPlatform;
  let gateway: RunningGateway;
  beforeAll(async () => {
    platform = await startFaultyPlatform();
    gateway = await startGateway(() => ({
      auth: { disable_auth: true },
      gateway: {
        upstream: platform.url,
        upstream_headers_timeout_seconds: HEADERS_TIMEOUT_MS / 1000,
        upstream_idle_timeout_seconds: IDLE_TIMEOUT_MS / 1000,
      },
    }));
  });
  afterAll(async () => {
    await gateway?.close();
    await platform?.close();
  });

  it('answers 502 JSON upstream_unavailable when nothing listens on the platform port', async () => {
    const closedPort = await freePort();
    const down = await startGateway(() => ({
      auth: { disable_auth: true },
      gateway: { upstream: `http://127.0.0.1:${closedPort}` },
    }));
    try {
      const body = await expectApiError(await fetch(`${down.url}/v1/models`), 502, 'upstream_unavailable');
      expect(body.error.message).not.toContain(String(closedPort));
      expect((await fetch(`${down.url}/healthz`)).status).toBe(200);
    } finally {
      await down.close();
    }
  });

  it('ends the stream abruptly when the platform resets mid-stream, logs it, and keeps serving', async () => {
    const requestId = 'reset-mid-stream-5120';
    const response = await fetch(`${gateway.url}/reset`, { headers: { 'x-request-id': requestId } });
    expect(response.status).toBe(200);
    const body = await readBody(response);
    expect(body.text).toBe('data: 1\n\ndata: 2\n\n');
    expect(body.error, 'the client must see a cut, not a clean end').toBeDefined();

    await sleep(100);
    const lines = logLines(gateway).filter((line) => line.reqId === requestId);
    expect(
      lines.some((line) => line.level >= 40),
      `a warning for request ${requestId}; its lines: ${JSON.stringify(lines)}`,
    ).toBe(true);
    expect((await fetch(`${gateway.url}/ok`)).status).toBe(200);
  });

  it(`answers 504 JSON upstream_timeout within [${HEADERS_TIMEOUT_MS - TIMER_EARLY_MS}, ${HEADERS_TIMEOUT_BY_MS}) ms when the platform never answers, and drops the connection`, async () => {
    const started = Date.now();
    const body = await expectApiError(await fetch(`${gateway.url}/hang`), 504, 'upstream_timeout');
    const elapsed = Date.now() - started;
    upstreamTimings.push(
      `504 for a platform that never answers after ${elapsed} ms (headers timeout ${HEADERS_TIMEOUT_MS} ms)`,
    );
    expect(elapsed).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - TIMER_EARLY_MS);
    expect(elapsed).toBeLessThan(HEADERS_TIMEOUT_BY_MS);
    expect(body.error.message).not.toContain(platform.url);
    await expect.poll(() => platform.openSockets(), { timeout: 1_000 }).toBe(0);
    expect((await fetch(`${gateway.url}/ok`)).status).toBe(200);
  });

  it(`does not cut a stream that sends every ${DRIP_EVERY_MS} ms for 3 s with an idle timeout of ${IDLE_TIMEOUT_MS} ms`, async () => {
    const response = await fetch(`${gateway.url}/drip?count=6&everyMs=${DRIP_EVERY_MS}`);
    expect(response.status).toBe(200);
    const body = await readBody(response);
    upstreamTimings.push(
      `stream sending every ${DRIP_EVERY_MS} ms: longest gap seen by the client ${body.longestGapMs} ms`,
    );
    expect(body.error).toBeUndefined();
    expect(body.text).toBe('data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\ndata: 6\n\ndata: [DONE]\n\n');
  });

  it('cuts a stream that falls silent for longer than upstream_idle_timeout_seconds', async () => {
    const response = await fetch(`${gateway.url}/drip?count=2&everyMs=${SILENCE_MS}&immediate=1`);
    expect(response.status).toBe(200);
    const started = Date.now();
    const body = await readBody(response);
    upstreamTimings.push(
      `stream silent for ${SILENCE_MS} ms cut after ${body.at - started} ms (idle timeout ${IDLE_TIMEOUT_MS} ms)`,
    );
    expect(body.text).toBe('data: 1\n\n');
    expect(body.error, 'the client must see a cut, not a clean end').toBeDefined();
    expect(body.at - started).toBeGreaterThanOrEqual(IDLE_TIMEOUT_MS - TIMER_EARLY_MS);
    expect(body.at - started).toBeLessThan(IDLE_TIMEOUT_BY_MS);
    expect((await fetch(`${gateway.url}/ok`)).status).toBe(200);
  });

  it('answers 504 JSON upstream_timeout when the platform sends headers and then nothing past the idle timeout', async () => {
    // Nothing has reached the client yet, so it can still be told what happened, as for /hang.
    const body = await expectApiError(
      await fetch(`${gateway.url}/drip?count=1&everyMs=${SILENCE_MS}`),
      504,
      'upstream_timeout',
    );
    expect(body.error.message).not.toContain(platform.url);
  });
});

describe('a SQLite file locked by another connection', () => {
  let setup: SignInSetup;
  let databasePath: string;
  let browser: Browserless;

  beforeAll(async () => {
    databasePath = join(tempDir(), 'locked.db');
    setup = await signInSetup(true, { database: { url: `sqlite:${databasePath}` } });
    browser = new Browserless();
    await signInForSession(setup.gateway, browser);
  });
  afterAll(() => setup?.close());

  function createKey(name: string): Promise<Response> {
    return browser.fetch(`${setup.gateway.url}/v1/auth/api-keys`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: setup.gateway.url },
      body: JSON.stringify({ name }),
    });
  }

  /** Holds an exclusive transaction on the file for `ms`, as a backup or `sqlite3` shell might. */
  function holdExclusiveLock(ms: number): { released: Promise<void> } {
    const holder = new SqliteDatabase(databasePath);
    holder.exec('BEGIN EXCLUSIVE');
    return {
      released: sleep(ms).then(() => {
        holder.exec('ROLLBACK');
        holder.close();
      }),
    };
  }

  it('answers 503 JSON database_unavailable with Retry-After (not 500) past busy_timeout, then works again', async () => {
    const lock = holdExclusiveLock(6_000);
    try {
      const refused = await createKey('while locked');
      expect(refused.headers.get('retry-after')).toBe('2');
      await expectApiError(refused, 503, 'database_unavailable');
    } finally {
      await lock.released;
    }
    const created = await createKey('after the lock');
    expect(created.status).toBe(201);
  });

  it('keeps answering other requests while one waits for the lock (the event loop is not blocked)', async () => {
    const lock = holdExclusiveLock(6_000);
    // A timer that should fire every 50 ms: the longest gap between two ticks is the longest stall.
    let last = Date.now();
    let longestStall = 0;
    const ticker = setInterval(() => {
      longestStall = Math.max(longestStall, Date.now() - last);
      last = Date.now();
    }, 50);
    try {
      await createKey('while another waits');
    } finally {
      clearInterval(ticker);
      await lock.released;
    }
    // better-sqlite3 waits out busy_timeout inside a synchronous call: every request, /healthz
    // included, would stall behind it.
    expect(longestStall, 'longest event-loop stall (ms)').toBeLessThan(1_000);
  });
});
