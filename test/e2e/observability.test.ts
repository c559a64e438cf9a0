/**
 * What an operator sees of a running `gatehouse serve`: request ids that follow a request from
 * the client through the log to the platform, JSON log lines that never hold a credential, and
 * Prometheus metrics on a listener of their own, never on the public port.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { MAX_SEEN_MODELS } from '../../src/metrics/model-labels.js';
import { Browserless } from '../support/browserless.js';
import { startFaultyProvider, type FaultyProvider } from '../support/faulty-provider.js';
import { freePort } from '../support/ports.js';
import { createKey } from '../support/keys.js';
import { startServe, type ServeProcess } from '../support/serve.js';
import { signIn, signInForSession } from '../support/sign-in.js';
import { CLIENT_ID, CLIENT_SECRET } from '../support/stack.js';

const UPSTREAM_KEY = 'sk-upstream-observability-5d1e8a7c3b';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const GATEHOUSE_METRICS = [
  'gatehouse_requests_total',
  'gatehouse_upstream_response_seconds',
  'gatehouse_sign_ins_total',
  'gatehouse_key_verifications_total',
  'gatehouse_key_cache_lookups_total',
  'gatehouse_active_sessions',
  'gatehouse_provider_metadata_refreshes_total',
  'gatehouse_request_duration_seconds',
  'gatehouse_stream_first_byte_seconds',
];

interface Echo {
  headers: Record<string, string | undefined>;
}

interface LogLine {
  level: number;
  time: number;
  msg: string;
  reqId?: string;
  [field: string]: unknown;
}

function parseLogLines(stdout: string): LogLine[] {
  return stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as LogLine);
}

/**
 * The value of one sample in Prometheus text format (summed over label sets when `labels` names
 * only some of them); 0 when no sample matches, as for a counter not yet incremented.
 */
function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)].map((pair) => [pair[1], pair[2]]),
    );
    if (Object.entries(labels).every(([label, value]) => present[label] === value)) total += Number(match[3]);
  }
  return total;
}

/** The random part and checksum of a key: what must never appear outside the create response. */
function secretPartOf(key: string): string {
  return key.slice(key.indexOf('_') + 1);
}

let dir: string;
let platform: SamplePlatform;
let platformClosed = false;
let provider: FaultyProvider;
let gateway: ServeProcess;
let metricsUrl: string;
let browser: Browserless;
let apiKey: string;

async function scrape(): Promise<string> {
  const response = await fetch(`${metricsUrl}/metrics`);
  expect(response.status).toBe(200);
  return response.text();
}

function withKey(path: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${apiKey}`, ...headers } });
}

/** Log lines written so far, once a line that `wanted` matches has come (the pipe is asynchronous). */
async function logLinesWith(wanted: (line: LogLine) => boolean): Promise<LogLine[]> {
  await expect
    .poll(() => parseLogLines(gateway.stdout()).some(wanted), { message: 'the log line waited for' })
    .toBe(true);
  return parseLogLines(gateway.stdout());
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-observability-'));
  const [port, metricsPort] = [await freePort(), await freePort()];
  const website = `http://127.0.0.1:${port}`;
  metricsUrl = `http://127.0.0.1:${metricsPort}`;
  platform = await startSamplePlatform({ chunkDelayMs: 5 });
  provider = await startFaultyProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUri: `${website}/v1/auth/auth`,
  });
  gateway = await startServe({
    dir,
    name: 'llama_config_edits',
    logLevel: 'trace',
    config: {
      powerml: { website },
      auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: provider.metadataUrl },
      gateway: {
        host: '127.0.0.1',
        port,
        upstream: platform.url,
        upstream_api_key: UPSTREAM_KEY,
        data_dir: join(dir, 'data'),
        metrics_port: metricsPort,
      },
      database: { url: `sqlite:${join(dir, 'gatehouse.db')}` },
    },
  });
  browser = new Browserless();
  await signInForSession(gateway, browser);
  apiKey = (await createKey(gateway, browser, { name: 'observability' })).key;
});

afterAll(async () => {
  await gateway?.stop(10_000);
  await Promise.all([platformClosed ? undefined : platform?.close(), provider?.close()]);
  rmSync(dir, { recursive: true, force: true });
});

describe('request ids', () => {
  it('passes an incoming X-Request-Id to the platform unchanged', async () => {
    for (const id of ['client-chosen-id-0001', 'trace=4bf92f3577b34da6;span="00f067aa0ba902b7"']) {
      const response = await withKey('/echo/request-id', { 'x-request-id': id });
      expect(response.status).toBe(200);
      expect(((await response.json()) as Echo).headers['x-request-id']).toBe(id);
    }
  });

  it('generates a new UUID for each request that has none and passes it to the platform', async () => {
    const ids = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const response = await withKey('/echo/no-request-id');
      const id = ((await response.json()) as Echo).headers['x-request-id'];
      expect(id).toMatch(UUID);
      ids.add(id!);
    }
    expect(ids.size).toBe(3);
  });

  it('writes the incoming id on the log line of a request that failed', async () => {
    const id = 'obs-sign-in-failure-7731';
    const response = await fetch(`${gateway.url}/v1/auth/auth?code=forged&state=forged`, {
      headers: { 'x-request-id': id },
    });
    expect(response.status).toBe(400);
    const lines = await logLinesWith((line) => line.reqId === id);
    expect(lines.filter((line) => line.reqId === id).map((line) => line.msg)).toContain('sign-in failed');
  });

  it('writes the incoming id on the audit line of a request it refused', async () => {
    const id = 'obs-refused-key-4410';
    const response = await fetch(`${gateway.url}/echo/refused`, {
      headers: { authorization: `Bearer gth_${'0'.repeat(36)}`, 'x-request-id': id },
    });
    expect(response.status).toBe(401);
    const lines = await logLinesWith((line) => line.msg === 'audit: request_denied');
    const audit = lines.find((line) => line.msg === 'audit: request_denied');
    expect(audit, 'an audit line for the refused key').toBeDefined();
    // Without the id an operator cannot tie the audit entry to the client's report or the proxy's log.
    expect(audit!.reqId).toBe(id);
  });
});

describe('metrics on gateway.metrics_port', () => {
  it('serves every Gatehouse metric in Prometheus text format', async () => {
    const response = await fetch(`${metricsUrl}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    for (const name of GATEHOUSE_METRICS) expect(text).toMatch(new RegExp(`^# TYPE ${name} \\w+$`, 'm'));
    expect(text).toMatch(/^gatehouse_upstream_response_seconds_bucket\{le="\+Inf"\} \d+$/m);
  });

  it('keeps the standard names of the process and Node.js metrics, as stock dashboards expect', async () => {
    const text = await scrape();
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes']) {
      expect(text).toMatch(new RegExp(`^${name} `, 'm'));
    }
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds /m);
    expect(text).not.toMatch(/^gatehouse_(process|nodejs)_/m);
  });

  it('times platform requests by model and status class, and the first byte of streams', async () => {
    const served = { model: 'demo-small', status_class: '2xx' };
    const before = await scrape();
    const chat = (stream: boolean) =>
      fetch(`${gateway.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'demo-small', stream, messages: [{ role: 'user', content: 'hi' }] }),
      });
    for (const stream of [false, true, true]) {
      const response = await chat(stream);
      expect(response.status).toBe(200);
      await response.text();
    }
    // The histograms are observed when the response closes, just after the client read its end.
    await sleep(50);
    const after = await scrape();
    const count = (text: string, name: string, labels: Record<string, string>) => metricValue(text, name, labels);
    expect(count(after, 'gatehouse_request_duration_seconds_count', served)).toBe(
      count(before, 'gatehouse_request_duration_seconds_count', served) + 3,
    );
    const model = { model: 'demo-small' };
    expect(count(after, 'gatehouse_stream_first_byte_seconds_count', model)).toBe(
      count(before, 'gatehouse_stream_first_byte_seconds_count', model) + 2,
    );
    // The first byte of a stream comes before its end.
    const firstBytes =
      count(after, 'gatehouse_stream_first_byte_seconds_sum', model) -
      count(before, 'gatehouse_stream_first_byte_seconds_sum', model);
    const durations =
      count(after, 'gatehouse_request_duration_seconds_sum', served) -
      count(before, 'gatehouse_request_duration_seconds_sum', served);
    expect(firstBytes).toBeGreaterThan(0);
    expect(firstBytes).toBeLessThan(durations);
    // A request whose body the gateway did not read has no model to name.
    expect(count(after, 'gatehouse_request_duration_seconds_count', { model: 'none' })).toBeGreaterThan(0);
  });

  it('lets no client create model series beyond the bounded set: later names count as other', async () => {
    const names = Array.from({ length: MAX_SEEN_MODELS + 5 }, (_, i) => `made-up-model-${i}-${Date.now()}`);
    for (const model of names) {
      const response = await fetch(`${gateway.url}/v1/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, prompt: 'x' }),
      });
      expect(response.status).toBe(200);
      await response.text();
    }
    await sleep(50);
    const text = await scrape();
    const models = new Set(
      [...text.matchAll(/^gatehouse_request_duration_seconds_count\{[^}]*model="([^"]*)"/gm)].map((match) => match[1]),
    );
    // The names the platform served first, then "other" and "none" for requests without a model.
    expect(models.size).toBeLessThanOrEqual(MAX_SEEN_MODELS + 2);
    expect(models).toContain('other');
    expect(metricValue(text, 'gatehouse_request_duration_seconds_count', { model: 'other' })).toBeGreaterThanOrEqual(5);
  });

  it('counts proxied requests by route, status and auth method, and times the platform', async () => {
    const labels = { route: 'platform', status: '200', auth: 'api_key' };
    const before = await scrape();
    for (let i = 0; i < 3; i++) expect((await withKey('/v1/models')).status).toBe(200);
    const after = await scrape();
    expect(metricValue(after, 'gatehouse_requests_total', labels)).toBe(
      metricValue(before, 'gatehouse_requests_total', labels) + 3,
    );
    expect(metricValue(after, 'gatehouse_upstream_response_seconds_count')).toBe(
      metricValue(before, 'gatehouse_upstream_response_seconds_count') + 3,
    );
    expect(metricValue(after, 'gatehouse_key_cache_lookups_total')).toBeGreaterThanOrEqual(
      metricValue(before, 'gatehouse_key_cache_lookups_total') + 3,
    );
  });

  it('counts refused requests apart from served ones', async () => {
    const labels = { route: 'platform', status: '401', auth: 'none' };
    const before = await scrape();
    expect((await fetch(`${gateway.url}/v1/models`)).status).toBe(401);
    const after = await scrape();
    expect(metricValue(after, 'gatehouse_requests_total', labels)).toBe(
      metricValue(before, 'gatehouse_requests_total', labels) + 1,
    );
  });

  it('counts key verifications by result', async () => {
    const before = await scrape();
    const wrong = await fetch(`${gateway.url}/v1/models`, {
      headers: { authorization: `Bearer gth_${'1'.repeat(36)}` },
    });
    expect(wrong.status).toBe(401);
    const after = await scrape();
    expect(metricValue(after, 'gatehouse_key_verifications_total', { result: 'invalid_api_key' })).toBe(
      metricValue(before, 'gatehouse_key_verifications_total', { result: 'invalid_api_key' }) + 1,
    );
    expect(metricValue(after, 'gatehouse_key_verifications_total', { result: 'valid' })).toBeGreaterThanOrEqual(1);
  });

  it('counts sign-ins by result, active sessions and provider discovery', async () => {
    const failure = { result: 'failure', reason: 'provider_access_denied' };
    const before = await scrape();
    expect(metricValue(before, 'gatehouse_sign_ins_total', { result: 'success' })).toBeGreaterThanOrEqual(1);
    expect(metricValue(before, 'gatehouse_active_sessions')).toBeGreaterThanOrEqual(1);
    expect(
      metricValue(before, 'gatehouse_provider_metadata_refreshes_total', { result: 'success' }),
    ).toBeGreaterThanOrEqual(1);
    provider.fault = 'access-denied';
    try {
      const { callback } = await signIn(gateway, new Browserless());
      expect(callback.status).toBe(403);
    } finally {
      provider.fault = 'none';
    }
    const after = await scrape();
    expect(metricValue(after, 'gatehouse_sign_ins_total', failure)).toBe(
      metricValue(before, 'gatehouse_sign_ins_total', failure) + 1,
    );
  });

  it('is not served on the public port: /metrics there is a platform path behind sign-in', async () => {
    const anonymous = await fetch(`${gateway.url}/metrics`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await anonymous.text()).not.toContain('gatehouse_');
    const signedIn = await withKey('/metrics');
    expect(signedIn.status).toBe(404);
    expect(await signedIn.text()).not.toContain('gatehouse_');
    expect(platform.requests.at(-1)?.url).toBe('/metrics');
  });

  it('answers 404 on the metrics port for every other path and method', async () => {
    for (const path of ['/', '/metrics/', '/metricsx', '/healthz', '/readyz', '/v1/models', '/v1/auth/me']) {
      const response = await fetch(`${metricsUrl}${path}`);
      expect(response.status, path).toBe(404);
      expect(await response.text(), path).toBe('');
    }
    for (const method of ['POST', 'PUT', 'DELETE']) {
      expect((await fetch(`${metricsUrl}/metrics`, { method })).status, method).toBe(404);
    }
    expect((await fetch(`${metricsUrl}/metrics?name[]=gatehouse_requests_total`)).status).toBe(200);
  });
});

describe('the log', () => {
  const basicCredentials = Buffer.from('alice:basic-password-9f8e7d').toString('base64');
  const wrongKey = `gth_${'Zq7'.repeat(12)}`;
  let refusedIdToken: string | undefined;
  let loginFlowCookie: string | undefined;

  beforeAll(async () => {
    // Every kind of request that could put a credential in the log: refused keys and schemes, a
    // sign-in whose ID token is refused, and a platform that is gone.
    await fetch(`${gateway.url}/echo/wrong-key`, { headers: { authorization: `Bearer ${wrongKey}` } });
    await fetch(`${gateway.url}/echo/basic`, { headers: { authorization: `Basic ${basicCredentials}` } });
    await fetch(`${gateway.url}/echo/raw`, { headers: { authorization: wrongKey } });
    provider.fault = 'wrong-nonce';
    try {
      const failing = new Browserless();
      const login = await failing.fetch(`${gateway.url}/v1/auth/login`);
      loginFlowCookie = failing.cookie(gateway.url, 'gatehouse_login');
      const authorize = await failing.fetch(login.headers.get('location')!);
      const callback = await failing.fetch(authorize.headers.get('location')!);
      expect(callback.status).toBe(400);
      refusedIdToken = provider.lastIdToken;
    } finally {
      provider.fault = 'none';
    }
    await platform.close();
    platformClosed = true;
  });

  it('writes the incoming id on the warning of a request the platform could not answer', async () => {
    const id = 'obs-platform-gone-2291';
    const response = await withKey('/v1/models', { 'x-request-id': id });
    expect(response.status).toBe(502);
    expect(await response.text()).not.toContain(platform.url);
    const lines = await logLinesWith((line) => line.reqId === id);
    const warning = lines.find((line) => line.reqId === id && line.msg === 'platform request failed');
    expect(warning?.level).toBe(40);
  });

  it('is JSON lines, each with a level, a time and a message, and nothing on stderr', async () => {
    const lines = parseLogLines(gateway.stdout());
    expect(lines.length).toBeGreaterThan(10);
    for (const line of lines) {
      expect(line).toMatchObject({ level: expect.any(Number), time: expect.any(Number), msg: expect.any(String) });
    }
    expect(gateway.stderr()).toBe('');
  });

  it('never holds a key, a cookie, the client secret, the upstream key or an Authorization value', async () => {
    const log = gateway.stdout() + gateway.stderr();
    const session = browser.cookie(gateway.url, 'gatehouse_session');
    const hashSecret = readFileSync(join(dir, 'data', 'key_hash_secret'), 'utf8').trim();
    expect(session).toBeDefined();
    expect(loginFlowCookie).toBeDefined();
    expect(refusedIdToken).toBeDefined();
    const secrets: Record<string, string> = {
      'the API key': secretPartOf(apiKey),
      'the session cookie': session!,
      'the login flow cookie': loginFlowCookie!,
      'the client secret': CLIENT_SECRET,
      'the upstream API key': UPSTREAM_KEY,
      'the key hash secret': hashSecret,
      'a refused key': secretPartOf(wrongKey),
      'Basic credentials': basicCredentials,
      'a refused ID token': refusedIdToken!.split('.')[2]!,
    };
    for (const [what, secret] of Object.entries(secrets)) expect(log.includes(secret), what).toBe(false);
  });
});
