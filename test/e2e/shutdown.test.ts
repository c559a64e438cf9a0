/**
 * SIGTERM, as a rolling deploy or `docker stop` sends it: the gateway stops accepting, lets open
 * requests and streams finish for `gateway.shutdown_grace_seconds`, cuts what is left, and exits 0.
 * Nothing a user holds (a session, an API key) is lost across the restart.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { Browserless } from '../support/browserless.js';
import { startFaultyProvider, type FaultyProvider } from '../support/faulty-provider.js';
import { freePort } from '../support/ports.js';
import { createKey } from '../support/keys.js';
import { startServe, type ServeProcess } from '../support/serve.js';
import { signInForSession } from '../support/sign-in.js';
import { readEvents } from '../support/sse.js';
import { CLIENT_ID, CLIENT_SECRET } from '../support/stack.js';

const TEST_TOKEN = 'shutdown-test-token-8c2e4a6f1b';

/** Resolves with the error code of a fresh TCP connection attempt, or 'connected'. */
function connectOutcome(url: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

let dir: string;
let platform: SamplePlatform;
const running: ServeProcess[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-shutdown-'));
  platform = await startSamplePlatform();
});

afterAll(async () => {
  await Promise.all(running.map((gateway) => gateway.stop()));
  await platform?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Starts a gateway on `port` over `database`. */
async function startGateway(
  port: number,
  database: string,
  extra: { gateway?: Record<string, unknown>; metadataUrl: string },
): Promise<ServeProcess> {
  const gateway = await startServe({
    dir,
    name: `config-${port}`,
    logLevel: 'info',
    config: {
      powerml: { website: `http://127.0.0.1:${port}` },
      auth: { test_token: TEST_TOKEN, test_token_email: 'robot@example.test' },
      auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: extra.metadataUrl },
      gateway: { host: '127.0.0.1', port, upstream: platform.url, data_dir: join(dir, 'data'), ...extra.gateway },
      database: { url: `sqlite:${database}` },
    },
  });
  running.push(gateway);
  return gateway;
}

describe('SIGTERM with the default grace period', () => {
  let provider: FaultyProvider;
  let port: number;
  let database: string;
  let browser: Browserless;
  let apiKey: string;
  let first: ServeProcess;

  beforeAll(async () => {
    port = await freePort();
    database = join(dir, 'graceful.db');
    provider = await startFaultyProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUri: `http://127.0.0.1:${port}/v1/auth/auth`,
    });
    first = await startGateway(port, database, { metadataUrl: provider.metadataUrl });
    browser = new Browserless();
    await signInForSession(first, browser);
    apiKey = (await createKey(first, browser, { name: 'survives restarts' })).key;
  });
  afterAll(() => provider?.close());

  it('refuses new connections, lets the open stream finish with every chunk and [DONE], then exits 0', async () => {
    const response = await fetch(`${first.url}/slow-stream?chunks=20&delayMs=100`, {
      headers: { authorization: `Bearer ${apiKey}` },
    });
    expect(response.status).toBe(200);
    const stream = readEvents(response);
    await expect.poll(() => stream.events.length, { timeout: 5_000 }).toBeGreaterThanOrEqual(3);
    const signalledAt = first.signal('SIGTERM');

    // A connection the kernel queued in the instant the listener closed is reset, not refused: try
    // again until the closed listener refuses outright.
    await expect.poll(() => connectOutcome(first.url), { interval: 20, timeout: 2_000 }).toBe('ECONNREFUSED');
    expect(stream.events.length, 'the stream was still running when new connections were refused').toBeLessThan(21);

    const ended = await stream.finished;
    expect(ended.error).toBeUndefined();
    expect(ended.at - signalledAt, 'the stream ran on after the signal (ms)').toBeGreaterThan(1_000);
    expect(stream.events).toHaveLength(21);
    expect(stream.events.at(-1)?.data).toBe('[DONE]');
    expect(stream.events.slice(0, 20).map((event) => (JSON.parse(event.data) as { index: number }).index)).toEqual(
      Array.from({ length: 20 }, (_, index) => index),
    );
    const exit = await first.exited;
    expect(exit.code, first.output()).toBe(0);
    expect(exit.at).toBeGreaterThanOrEqual(ended.at - 50);
    // The finished stream's connection is idle now; keeping it (HTTP keep-alive) must not hold the
    // process until the end of the 30 s grace period.
    expect(exit.at - ended.at, 'exit after the last stream ended (ms)').toBeLessThan(2_000);
    expect(first.output()).toMatch(/"signal":"SIGTERM"/);
    expect(first.output()).toMatch(/"msg":"stopped"/);
  }, 45_000);

  it('keeps the session and the API key across a restart on the same SQLite file', async () => {
    const again = await startGateway(port, database, { metadataUrl: provider.metadataUrl });
    const me = await browser.fetch(`${again.url}/v1/auth/me`);
    expect(me.status).toBe(200);
    expect(((await me.json()) as { email: string }).email).toBe(provider.email);
    const used = await fetch(`${again.url}/echo/after-restart`, { headers: { authorization: `Bearer ${apiKey}` } });
    expect(used.status).toBe(200);

    const signalledAt = again.signal('SIGTERM');
    const exit = await again.exited;
    expect(exit.code).toBe(0);
    expect(exit.at - signalledAt, 'an idle gateway stops at once').toBeLessThan(2_000);
  });
});

describe('SIGTERM with shutdown_grace_seconds: 1', () => {
  let provider: FaultyProvider;
  beforeAll(async () => {
    // Only for readiness: the stream is opened with the static test token, not a session.
    provider = await startFaultyProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUri: 'http://127.0.0.1:1/v1/auth/auth',
    });
  });
  afterAll(() => provider?.close());

  it('cuts a 10 s stream about 1 s after the signal and exits 0 within 3 s', async () => {
    const gateway = await startGateway(await freePort(), join(dir, 'short-grace.db'), {
      metadataUrl: provider.metadataUrl,
      gateway: { shutdown_grace_seconds: 1 },
    });
    const response = await fetch(`${gateway.url}/slow-stream?chunks=20&delayMs=500`, {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(response.status).toBe(200);
    const stream = readEvents(response);
    await expect.poll(() => stream.events.length, { timeout: 5_000 }).toBeGreaterThanOrEqual(2);
    const signalledAt = gateway.signal('SIGTERM');

    const ended = await stream.finished;
    expect(ended.error, 'the client sees the stream cut off, not a clean end').toBeDefined();
    expect(stream.events.map((event) => event.data)).not.toContain('[DONE]');
    expect(stream.events.length).toBeLessThan(8);
    expect(ended.at - signalledAt).toBeGreaterThanOrEqual(900);
    expect(ended.at - signalledAt).toBeLessThan(2_000);
    const exit = await gateway.exited;
    expect(exit.code, gateway.output()).toBe(0);
    expect(exit.at - signalledAt).toBeLessThan(3_000);
  });
});
