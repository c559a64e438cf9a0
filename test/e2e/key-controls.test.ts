/**
 * The controls an API key carries beyond "it is valid", through the real gateway to the sample
 * platform, with real streaming requests: scopes, model allow-lists, request and token limits per
 * key and per user (in memory, and shared through Redis by two gateways on one database), usage
 * accounting, rotation with a grace period, expiry warnings, leak reports and the CLI.
 *
 * Limits count in fixed one-minute windows, so every test that counts waits for a fresh minute
 * when too little of the current one is left for it to finish inside.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UsageRow } from '../../src/usage/recorder.js';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { generateApiKey } from '../../src/keys/format.js';
import { Browserless } from '../support/browserless.js';
import { startFaultyProvider, type FaultyProvider } from '../support/faulty-provider.js';
import { freePort } from '../support/ports.js';
import { requireRedis } from '../support/requirements.js';
import { deleteRedisKeys, dropSchema, REDIS_URL } from '../support/services.js';
import { signInForSession } from '../support/sign-in.js';
import {
  CLIENT_ID,
  CLIENT_SECRET,
  signInThrough,
  startFaultyStack,
  startGateway,
  testDatabase,
  type FaultyStack,
  type RunningGateway,
} from '../support/stack.js';
import { gatehouseArgs } from '../support/cli.js';
import { expectApiError } from '../support/api-error.js';
import { sendRequest } from '../support/raw-http.js';
import { inOneMinuteWindow, untilStatus } from '../support/wait.js';
import { createKey, listKeys, type CreatedKey } from '../support/keys.js';

const redisAvailable = await requireRedis();

const OWNER = { subject: 'test-user-1', email: 'ada@example.test' };
const OTHER = { subject: 'test-user-2', email: 'bob@example.test' };
const CLI = gatehouseArgs();
/** Tests that wait for a fresh minute or for usage to be written get this long. */
const SLOW_TEST_MS = 60_000;

interface RotatedKey extends CreatedKey {
  replaces: string;
  grace_minutes: number;
}

interface AuditLine {
  event: string;
  target: string | null;
  detail: Record<string, unknown>;
}

/** What the client received from one request, read to the end. */
interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

/** A streamed answer cut into its events' `data:` payloads, in order. */
interface Streamed extends Answer {
  payloads: string[];
}

interface StreamChunk {
  choices: Array<{ delta?: { content?: string } }>;
  usage?: { prompt_tokens: number; completion_tokens: number } | null;
}

const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-controls-'));
  tempDirs.push(dir);
  return dir;
}

/** A gateway in front of the sample platform; the failed-auth limit is off so refusals cannot lock tests out. */
function startControlsStack(auth: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return startFaultyStack({
    ...extra,
    auth: { failed_auth_per_minute: 0, ...auth },
    // Metrics are kept only with a metrics port; the tests read the registry, not the port.
    gateway: { data_dir: tempDir(), metrics_port: 0 },
  });
}

/** A browser signed in as `who` (the provider signs in whoever it is told to next). */
async function signedInAs(stack: FaultyStack, who: { subject: string; email: string } = OWNER) {
  stack.provider.subject = who.subject;
  stack.provider.email = who.email;
  const browser = new Browserless();
  await signInForSession(stack, browser);
  return browser;
}

function jsonPost(origin: string, body: unknown): RequestInit {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  };
}

async function read(response: Response): Promise<Answer> {
  return { status: response.status, headers: response.headers, text: await response.text() };
}

async function withKey(url: string, key: string, path: string, init: RequestInit = {}): Promise<Answer> {
  return read(await fetch(`${url}${path}`, { ...init, headers: { ...init.headers, authorization: `Bearer ${key}` } }));
}

/** A chat request for the sample platform, which answers "You said: <content>" one word per event. */
function chatBody(content: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: 'demo-small', stream: true, messages: [{ role: 'user', content }], ...extra };
}

function postJson(body: unknown): RequestInit {
  return { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

function payloadsOf(text: string): string[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((event) => event.trim() !== '')
    .map((event) =>
      event
        .split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n'),
    );
}

async function streamChat(
  url: string,
  key: string,
  body: Record<string, unknown>,
  path = '/v1/chat/completions',
): Promise<Streamed> {
  const answer = await withKey(url, key, path, postJson(body));
  return { ...answer, payloads: answer.status === 200 ? payloadsOf(answer.text) : [] };
}

function chunksOf(streamed: Streamed): StreamChunk[] {
  return streamed.payloads.filter((payload) => payload !== '[DONE]').map((payload) => JSON.parse(payload));
}

function contentOf(streamed: Streamed): string {
  return chunksOf(streamed)
    .map((chunk) => chunk.choices[0]?.delta?.content ?? '')
    .join('');
}

/** Expects a complete stream of the sample platform's answer to `content`, ending in [DONE]. */
function expectFullStream(streamed: Streamed, content: string): void {
  expect(streamed.status, streamed.text).toBe(200);
  expect(streamed.headers.get('content-type')).toMatch(/^text\/event-stream/);
  expect(streamed.payloads.at(-1)).toBe('[DONE]');
  expect(contentOf(streamed)).toBe(`You said: ${content}`);
}

function words(count: number): string {
  return Array.from({ length: count }, (_, i) => `w${i}`).join(' ');
}

/** Polls GET /v1/auth/usage (as the key) until the key's row of today satisfies `done`, for up to 3 s. */
async function usageRowOf(
  url: string,
  key: CreatedKey,
  done: (row: UsageRow) => boolean,
  timeoutMs = 3_000,
): Promise<UsageRow> {
  let row: UsageRow | undefined;
  const rowOfToday = async () => {
    const answer = await withKey(url, key.key, '/v1/auth/usage');
    expect(answer.status, answer.text).toBe(200);
    const today = new Date().toISOString().slice(0, 10);
    return (row = (JSON.parse(answer.text) as { data: UsageRow[] }).data.find(
      (entry) => entry.key_id === key.id && entry.day === today,
    ));
  };
  await expect
    .poll(rowOfToday, { interval: 100, timeout: timeoutMs })
    .toSatisfy((seen: UsageRow | undefined) => seen !== undefined && done(seen));
  return row!;
}

/**
 * Sends `attempt` (a request that costs no tokens itself) until it is refused with 429: tokens are
 * counted once the platform has reported them, a moment after the answer ended.
 */
function untilRefused(attempt: () => Promise<Answer>): Promise<Answer> {
  return untilStatus(attempt, 429);
}

function requestsTo(platform: SamplePlatform, path: string): number {
  return platform.requests.filter((recorded) => recorded.url === path).length;
}

function counterValue(metrics: string, series: string): number {
  const line = metrics.split('\n').find((entry) => entry.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** Expects the 429 a limit answers with: OpenAI's code and headers, Retry-After in the minute. */
function expectLimited(answer: Answer, code: 'rate_limit_exceeded' | 'tokens_limit_exceeded', limit: number) {
  const message = expectApiError(answer, 429, code).error.message;
  expect(JSON.parse(answer.text).error.type).toBe('rate_limit_error');
  const retryAfter = Number(answer.headers.get('retry-after'));
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);
  const kind = code === 'rate_limit_exceeded' ? 'requests' : 'tokens';
  expect(answer.headers.get(`x-ratelimit-limit-${kind}`)).toBe(String(limit));
  expect(answer.headers.get(`x-ratelimit-remaining-${kind}`)).toBe('0');
  expect(answer.headers.get(`x-ratelimit-reset-${kind}`)).toBe(`${retryAfter}s`);
  return message;
}

describe('key controls on a gateway with the shipped scope mapping', () => {
  let stack: FaultyStack;
  let owner: Browserless;
  beforeAll(async () => {
    stack = await startControlsStack({ admin_emails: [OWNER.email] });
    owner = await signedInAs(stack);
  });
  afterAll(() => stack.close());

  const key = (body: Record<string, unknown>) => createKey(stack, owner, { name: 'controls', ...body });

  describe('scopes', () => {
    it('lets an inference key stream chat completions and reach every inference path', async () => {
      const inference = await key({ scopes: ['inference'] });
      expect(inference.scopes).toEqual(['inference']);
      expectFullStream(await streamChat(stack.url, inference.key, chatBody('hello there')), 'hello there');
      const completion = await withKey(
        stack.url,
        inference.key,
        '/v1/completions',
        postJson({ model: 'demo-small', prompt: 'hi', stream: true }),
      );
      expect(completion.status).toBe(200);
      expect(payloadsOf(completion.text).at(-1)).toBe('[DONE]');
      expect((await withKey(stack.url, inference.key, '/v1/models')).status).toBe(200);
      // The sample platform serves none of these; reaching it (its 404) is what the scope allows.
      for (const path of [
        '/v1/embeddings',
        '/inf/generate',
        '/v2/completions',
        '/v3/streaming_completions',
        '/v1/batch_completions',
      ]) {
        const before = requestsTo(stack.platform, path);
        const answer = await withKey(stack.url, inference.key, path, postJson({ model: 'demo-small', prompt: 'x' }));
        expect(answer.status, `${path}: ${answer.text}`).toBe(404);
        expect(requestsTo(stack.platform, path), path).toBe(before + 1);
      }
    });

    it('refuses an inference key the training paths: 403 insufficient_scope naming "training", platform untouched', async () => {
      const inference = await key({ scopes: ['inference'] });
      const forwarded = stack.platform.requests.length;
      for (const path of ['/v1/train', '/v1/tune/jobs', '/v1/fine_tuning/jobs', '/v1/data/sets', '/v1/files']) {
        const answer = await withKey(stack.url, inference.key, path, postJson({ training_file: 'f' }));
        const message = expectApiError(answer, 403, 'insufficient_scope').error.message;
        expect(JSON.parse(answer.text).error.type).toBe('permission_error');
        expect(message, path).toContain('"training"');
        expect(message, path).toContain(path);
        expect(answer.text).not.toContain(inference.key);
      }
      expect(stack.platform.requests.length).toBe(forwarded);
    });

    it('refuses an inference key other paths: GET needs "read", anything else "all"', async () => {
      const inference = await key({ scopes: ['inference'] });
      expect(
        expectApiError(await withKey(stack.url, inference.key, '/echo/x'), 403, 'insufficient_scope').error.message,
      ).toContain('"read"');
      const post = await withKey(stack.url, inference.key, '/echo/x', postJson({}));
      expect(expectApiError(post, 403, 'insufficient_scope').error.message).toContain('"all"');
      const otherCase = await withKey(stack.url, inference.key, '/V1/CHAT/COMPLETIONS', postJson(chatBody('x')));
      expectApiError(otherCase, 403, 'insufficient_scope');
    });

    it('lets a training key use training paths with any method, and refuses it inference', async () => {
      const training = await key({ scopes: ['training'] });
      for (const [method, path] of [
        ['POST', '/v1/fine_tuning/jobs'],
        ['GET', '/v1/files'],
        ['DELETE', '/v1/files/file-1'],
        ['PUT', '/v1/data/set-1'],
      ] as const) {
        const before = requestsTo(stack.platform, path);
        const answer = await withKey(stack.url, training.key, path, { method });
        expect(answer.status, `${method} ${path}: ${answer.text}`).toBe(404);
        expect(requestsTo(stack.platform, path)).toBe(before + 1);
      }
      const chat = await streamChat(stack.url, training.key, chatBody('x'));
      expect(expectApiError(chat, 403, 'insufficient_scope').error.message).toContain('"inference"');
      const models = await withKey(stack.url, training.key, '/v1/models');
      expect(expectApiError(models, 403, 'insufficient_scope').error.message).toContain('"inference"');
      // A repeated slash does not make a training path something else.
      expectApiError(await withKey(stack.url, training.key, '/v1//models'), 403, 'insufficient_scope');
    });

    it('lets a read key GET and HEAD anywhere and nothing else', async () => {
      const reader = await key({ scopes: ['read'] });
      expect((await withKey(stack.url, reader.key, '/echo/x')).status).toBe(200);
      expect((await withKey(stack.url, reader.key, '/echo/x', { method: 'HEAD' })).status).toBe(200);
      expect((await withKey(stack.url, reader.key, '/v1/models')).status).toBe(200);
      expect(
        expectApiError(await streamChat(stack.url, reader.key, chatBody('x')), 403, 'insufficient_scope').error.message,
      ).toContain('"inference"');
      for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
        const answer = await withKey(stack.url, reader.key, '/echo/x', { method });
        expect(expectApiError(answer, 403, 'insufficient_scope').error.message, method).toContain('"all"');
      }
      const deleteFile = await withKey(stack.url, reader.key, '/v1/files/file-1', { method: 'DELETE' });
      expect(expectApiError(deleteFile, 403, 'insufficient_scope').error.message).toContain('"training"');
    });

    it('gives a key with several scopes their union', async () => {
      const both = await key({ scopes: ['inference', 'training'] });
      expectFullStream(await streamChat(stack.url, both.key, chatBody('union')), 'union');
      expect((await withKey(stack.url, both.key, '/v1/fine_tuning/jobs', postJson({}))).status).toBe(404);
      expectApiError(await withKey(stack.url, both.key, '/echo/x'), 403, 'insufficient_scope');
    });

    it('gives a key created without scopes every scope', async () => {
      const all = await key({});
      expect(all.scopes).toEqual(['all']);
      expectFullStream(await streamChat(stack.url, all.key, chatBody('all')), 'all');
      expect((await withKey(stack.url, all.key, '/echo/x', { method: 'DELETE' })).status).toBe(200);
      expect((await withKey(stack.url, all.key, '/v1/train', postJson({}))).status).toBe(404);
    });

    it('refuses a scoped key dot segments that would smuggle one path past another: 400, platform untouched', async () => {
      const training = await key({ scopes: ['training'] });
      const inference = await key({ scopes: ['inference'] });
      const body = JSON.stringify(chatBody('smuggled'));
      const forwarded = stack.platform.requests.length;
      for (const [scoped, path] of [
        [training, '/v1/train/../chat/completions'],
        [training, '/v1/train/%2e%2e/chat/completions'],
        [training, '/v1/train/%2E%2E/chat/completions'],
        [training, '/v1/files/./../chat/completions'],
        [training, '/v1/train/..;x/chat/completions'],
        [inference, '/v1/chat/completions/../../train'],
        [inference, '/inf/../v1/fine_tuning/jobs'],
        [inference, '/v1/./chat/completions'],
      ] as const) {
        const answer = await sendRequest(stack.url, {
          method: 'POST',
          path,
          headers: {
            authorization: `Bearer ${scoped.key}`,
            'content-type': 'application/json',
            'content-length': body.length,
          },
          body,
        });
        expectApiError(answer, 400, 'invalid_request_path');
      }
      expect(stack.platform.requests.length).toBe(forwarded);
    });
  });

  describe('model allow-list', () => {
    it('streams with an allowed model and refuses another before the platform sees it: 403 model_not_allowed', async () => {
      const small = await key({ models: ['demo-small'] });
      expect(small.models).toEqual(['demo-small']);
      expectFullStream(await streamChat(stack.url, small.key, chatBody('allowed')), 'allowed');
      const forwarded = stack.platform.requests.length;
      const refused = await streamChat(stack.url, small.key, chatBody('refused', { model: 'demo-large' }));
      const message = expectApiError(refused, 403, 'model_not_allowed').error.message;
      expect(message).toContain('demo-large');
      expect(message).toContain('demo-small');
      const completion = await withKey(
        stack.url,
        small.key,
        '/v1/completions',
        postJson({ model: 'demo-large', prompt: 'x' }),
      );
      expectApiError(completion, 403, 'model_not_allowed');
      expect(stack.platform.requests.length).toBe(forwarded);
    });

    it('refuses a body with no model, or a model that is not a string: 403 model_not_allowed', async () => {
      const small = await key({ models: ['demo-small'] });
      const forwarded = stack.platform.requests.length;
      for (const model of [undefined, null, 7, ['demo-small'], { id: 'demo-small' }, 'DEMO-SMALL', 'demo-small ']) {
        const answer = await streamChat(stack.url, small.key, chatBody('x', { model }));
        expectApiError(answer, 403, 'model_not_allowed');
      }
      for (const body of ['[]', '"demo-small"', '42', 'null']) {
        const answer = await withKey(stack.url, small.key, '/v1/chat/completions', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        });
        expectApiError(answer, 403, 'model_not_allowed');
      }
      expect(stack.platform.requests.length).toBe(forwarded);
    });

    it('refuses a JSON-typed body that is not JSON: 400 invalid_json', async () => {
      const small = await key({ models: ['demo-small'] });
      for (const contentType of ['application/json', 'application/json; charset=utf-8', 'application/vnd.api+json']) {
        const answer = await withKey(stack.url, small.key, '/v1/chat/completions', {
          method: 'POST',
          headers: { 'content-type': contentType },
          body: '{"model": "demo-small",',
        });
        expectApiError(answer, 400, 'invalid_json');
      }
    });

    // The platform reads the body as JSON whatever it is labelled (the sample platform does, as do
    // many Python servers), so a body the gateway did not check must not reach it.
    it('checks the model in a body not labelled as JSON too, and never forwards it', async () => {
      const small = await key({ models: ['demo-small'] });
      const body = JSON.stringify(chatBody('unchecked', { model: 'demo-large', stream: false }));
      const forwarded = stack.platform.requests.length;
      // Bytes, so fetch adds no content type of its own to the unlabelled one.
      const bytes = new TextEncoder().encode(body);
      const labels: Array<Record<string, string>> = [
        { 'content-type': 'text/plain' },
        {},
        { 'content-type': 'application/octet-stream' },
      ];
      for (const headers of labels) {
        const answer = await withKey(stack.url, small.key, '/v1/chat/completions', {
          method: 'POST',
          headers,
          body: bytes,
        });
        expect([400, 403], `${JSON.stringify(headers)}: ${answer.text}`).toContain(answer.status);
        expect(answer.text).not.toContain('"model":"demo-large"');
      }
      expect(stack.platform.requests.length).toBe(forwarded);
    });

    it('checks the model in JSON bodies of every method, not only POST', async () => {
      const small = await key({ models: ['demo-small'] });
      for (const method of ['PUT', 'PATCH']) {
        const answer = await withKey(stack.url, small.key, '/echo/models', {
          method,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'demo-large' }),
        });
        expectApiError(answer, 403, 'model_not_allowed');
      }
    });

    it('lists only the allowed models on GET /v1/models, with or without a query', async () => {
      const small = await key({ models: ['demo-small', 'not-served'] });
      for (const path of ['/v1/models', '/v1/models?limit=10']) {
        const answer = await withKey(stack.url, small.key, path);
        expect(answer.status).toBe(200);
        const list = JSON.parse(answer.text) as { object: string; data: Array<{ id: string }> };
        expect(list.object).toBe('list');
        expect(list.data.map((model) => model.id)).toEqual(['demo-small']);
      }
      const unrestricted = await key({});
      const all = JSON.parse((await withKey(stack.url, unrestricted.key, '/v1/models')).text) as {
        data: Array<{ id: string }>;
      };
      expect(all.data.map((model) => model.id)).toEqual(['demo-small', 'demo-large']);
    });

    // The platform decodes percent-escapes before routing, so these are /v1/models to it.
    it('keeps the model list filtered however its path is spelt', async () => {
      const small = await key({ models: ['demo-small'] });
      const scoped = await key({ models: ['demo-small'], scopes: ['inference'] });
      for (const restricted of [small, scoped]) {
        for (const path of ['/v1/%6dodels', '/%761/models']) {
          const answer = await withKey(stack.url, restricted.key, path);
          // Both keys may read the model list: a refusal here would hide an unfiltered answer, so it fails.
          expect(answer.status, `${restricted.scopes.join(',')} ${path}: ${answer.text}`).toBe(200);
          const ids = (JSON.parse(answer.text) as { data: Array<{ id: string }> }).data.map((model) => model.id);
          expect(ids, `${restricted.scopes.join(',')} ${path}`).toEqual(['demo-small']);
        }
      }
    });
  });

  describe('streams and their usage', () => {
    it('asks the platform for usage on the client’s behalf and strips that chunk: no usage-only chunk, [DONE] last', async () => {
      const plain = await key({});
      const streamed = await streamChat(stack.url, plain.key, chatBody('one two three'));
      expectFullStream(streamed, 'one two three');
      const forwardedBody = JSON.parse(stack.platform.requests.at(-1)!.body) as Record<string, unknown>;
      expect(forwardedBody.stream_options).toEqual({ include_usage: true });
      expect(forwardedBody.messages).toEqual([{ role: 'user', content: 'one two three' }]);
      const chunks = chunksOf(streamed);
      expect(chunks.length).toBe(5);
      expect(chunks.filter((chunk) => chunk.choices.length === 0)).toEqual([]);
      expect(chunks.filter((chunk) => chunk.usage)).toEqual([]);
      expect(streamed.payloads.filter((payload) => payload === '[DONE]')).toHaveLength(1);
    });

    it('sends the client the stream the platform sends a client that did not ask for usage', async () => {
      const plain = await key({});
      const body = chatBody('same as direct');
      const viaGateway = await streamChat(stack.url, plain.key, body);
      const direct = await read(await fetch(`${stack.platform.url}/v1/chat/completions`, postJson(body)));
      const normalise = (payloads: string[]) =>
        payloads.map((payload) => payload.replace(/"id":"[^"]*"/, '"id":""').replace(/"created":\d+/, '"created":0'));
      expect(normalise(viaGateway.payloads)).toEqual(normalise(payloadsOf(direct.text)));
    });

    it('keeps the usage chunk when the client asked for it itself, and keeps its other stream_options', async () => {
      const plain = await key({});
      const streamed = await streamChat(
        stack.url,
        plain.key,
        chatBody('count me', { stream_options: { include_usage: true, continuous_usage_stats: false } }),
      );
      expectFullStream(streamed, 'count me');
      const forwardedBody = JSON.parse(stack.platform.requests.at(-1)!.body) as Record<string, unknown>;
      expect(forwardedBody.stream_options).toEqual({ include_usage: true, continuous_usage_stats: false });
      const last = chunksOf(streamed).at(-1)!;
      expect(last.choices).toEqual([]);
      expect(last.usage).toEqual({ prompt_tokens: 2, completion_tokens: 4, total_tokens: 6 });
      expect(streamed.payloads.at(-1)).toBe('[DONE]');
    });

    // The gateway reads chat bodies to ask for usage; JSON that is not an object is the platform's to refuse.
    it('forwards a chat body of JSON null, an array or a number to the platform instead of failing with 500', async () => {
      const plain = await key({});
      for (const body of ['null', '[]', '42']) {
        const forwarded = requestsTo(stack.platform, '/v1/chat/completions');
        const answer = await withKey(stack.url, plain.key, '/v1/chat/completions', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        });
        expect(answer.status, `${body}: ${answer.text}`).toBe(400);
        expect(requestsTo(stack.platform, '/v1/chat/completions'), body).toBe(forwarded + 1);
      }
    });

    it('passes each event on as the platform writes it, not at the end', async () => {
      const plain = await key({});
      const response = await fetch(`${stack.url}/v1/chat/completions`, {
        ...postJson(chatBody(words(10))),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${plain.key}` },
      });
      expect(response.status).toBe(200);
      const reader = response.body!.getReader();
      const started = performance.now();
      const firstAt = (await reader.read(), performance.now() - started);
      let lastAt = firstAt;
      while (!(await reader.read()).done) lastAt = performance.now() - started;
      // 12 events 20 ms apart: the first arrives long before the last.
      expect(lastAt - firstAt).toBeGreaterThan(100);
    });
  });

  describe('usage accounting', () => {
    it(
      'counts requests, tokens of JSON and streamed answers, status classes and latency per key and day',
      async () => {
        const counted = await key({});
        const json = await withKey(
          stack.url,
          counted.key,
          '/v1/chat/completions',
          postJson(chatBody('one two three', { stream: false })),
        );
        expect(json.status).toBe(200);
        expectFullStream(await streamChat(stack.url, counted.key, chatBody('a b')), 'a b');
        const asked = await streamChat(
          stack.url,
          counted.key,
          chatBody('x', { stream_options: { include_usage: true } }),
        );
        expectFullStream(asked, 'x');
        expect((await withKey(stack.url, counted.key, '/v1/embeddings', postJson({ input: 'x' }))).status).toBe(404);

        const row = await usageRowOf(stack.url, counted, (entry) => entry.requests >= 4);
        expect(row).toMatchObject({
          key_id: counted.id,
          requests: 4,
          // "one two three" -> 3 + 5; "a b" -> 2 + 4; "x" -> 1 + 3
          prompt_tokens: 6,
          completion_tokens: 12,
          status_2xx: 3,
          status_4xx: 1,
          status_5xx: 0,
        });
        // Two of the answers streamed 20 ms apart per event.
        expect(row!.latency_ms_total).toBeGreaterThanOrEqual(40);
      },
      SLOW_TEST_MS,
    );

    it(
      'shows the same rows to the signed-in owner, and counts browser requests under "session"',
      async () => {
        const counted = await key({});
        expect((await streamChat(stack.url, counted.key, chatBody('mine'))).status).toBe(200);
        expect((await owner.fetch(`${stack.url}/v1/models`)).status).toBe(200);
        await usageRowOf(stack.url, counted, (entry) => entry.requests >= 1);
        let rows: UsageRow[] = [];
        const usageRows = async () => {
          const response = await owner.fetch(`${stack.url}/v1/auth/usage`);
          expect(response.headers.get('cache-control')).toBe('no-store');
          return (rows = ((await response.json()) as { data: UsageRow[] }).data);
        };
        await expect
          .poll(usageRows, { interval: 100, timeout: 3_000 })
          .toSatisfy((seen: UsageRow[]) => seen.some((row) => row.key_id === 'session'));
        expect(rows.find((row) => row.key_id === counted.id)).toMatchObject({ requests: 1, prompt_tokens: 1 });
        expect(rows.find((row) => row.key_id === 'session')?.requests).toBeGreaterThanOrEqual(1);
      },
      SLOW_TEST_MS,
    );

    it('adds to the Prometheus counters gatehouse_usage_requests_total and gatehouse_usage_tokens_total', async () => {
      const counted = await key({});
      const registry = stack.gateway.metrics!.registry;
      const before = await registry.metrics();
      expectFullStream(
        await streamChat(stack.url, counted.key, chatBody('four little words here')),
        'four little words here',
      );
      const json = await withKey(
        stack.url,
        counted.key,
        '/v1/completions',
        postJson({ model: 'demo-small', prompt: 'p q' }),
      );
      expect(json.status).toBe(200);
      const delta = async (series: string) =>
        counterValue(await registry.metrics(), series) - counterValue(before, series);
      // Usage is recorded when the response closes, a moment after the client has read it.
      await expect.poll(() => delta('gatehouse_usage_requests_total{status_class="2xx"}')).toBe(2);
      // "four little words here" -> 4 + 6; "p q" -> 2 + 3 ("Echo: p q")
      expect(await delta('gatehouse_usage_tokens_total{kind="prompt"}')).toBe(6);
      expect(await delta('gatehouse_usage_tokens_total{kind="completion"}')).toBe(9);
    });
  });

  describe('limits', () => {
    it(
      'admits exactly 5 of 20 concurrent streaming requests to a 5/min key; the rest get 429 with OpenAI’s headers',
      async () => {
        const five = await key({ requests_per_minute: 5 });
        await inOneMinuteWindow();
        const forwarded = requestsTo(stack.platform, '/v1/chat/completions');
        const answers = await Promise.all(
          Array.from({ length: 20 }, (_, i) => streamChat(stack.url, five.key, chatBody(`burst ${i}`))),
        );
        const admitted = answers.filter((answer) => answer.status === 200);
        const refused = answers.filter((answer) => answer.status !== 200);
        expect(admitted).toHaveLength(5);
        for (const answer of admitted) expect(answer.payloads.at(-1)).toBe('[DONE]');
        expect(admitted.map((answer) => answer.headers.get('x-ratelimit-limit-requests'))).toEqual(Array(5).fill('5'));
        expect(admitted.map((answer) => answer.headers.get('x-ratelimit-remaining-requests')).sort()).toEqual([
          '0',
          '1',
          '2',
          '3',
          '4',
        ]);
        expect(refused).toHaveLength(15);
        for (const answer of refused) expect(expectLimited(answer, 'rate_limit_exceeded', 5)).toMatch(/this API key/);
        expect(requestsTo(stack.platform, '/v1/chat/completions')).toBe(forwarded + 5);
      },
      SLOW_TEST_MS,
    );

    it(
      'refuses a 30 tokens/min key once a stream has spent its tokens',
      async () => {
        const thirty = await key({ tokens_per_minute: 30 });
        await inOneMinuteWindow();
        const first = await streamChat(stack.url, thirty.key, chatBody(words(20)));
        expectFullStream(first, words(20));
        expect(first.headers.get('x-ratelimit-limit-tokens')).toBe('30');
        expect(first.headers.get('x-ratelimit-remaining-tokens')).toBe('30');
        // 20 prompt + 22 completion tokens: the minute's 30 are spent.
        const refused = await untilRefused(() => withKey(stack.url, thirty.key, '/v1/models'));
        expect(expectLimited(refused, 'tokens_limit_exceeded', 30)).toMatch(/30 tokens/);
      },
      SLOW_TEST_MS,
    );

    // The platform decodes %63 to "c": the same chat completion, so the same tokens must count.
    it(
      'counts the tokens of a stream however the chat path is spelt',
      async () => {
        const thirty = await key({ tokens_per_minute: 30 });
        await inOneMinuteWindow();
        const first = await streamChat(stack.url, thirty.key, chatBody(words(20)), '/v1/chat/%63ompletions');
        expectFullStream(first, words(20));
        const refused = await untilRefused(() => withKey(stack.url, thirty.key, '/v1/models'));
        expectLimited(refused, 'tokens_limit_exceeded', 30);
      },
      SLOW_TEST_MS,
    );
  });

  describe('rotation', () => {
    const rotate = (id: string, body: unknown, browser = owner, headers: Record<string, string> = {}) =>
      browser
        .fetch(`${stack.url}/v1/auth/api-keys/${id}/rotate`, {
          ...jsonPost(stack.url, body),
          headers: { 'content-type': 'application/json', origin: stack.url, ...headers },
        })
        .then(read);

    it('issues a new secret with the same name and controls; the old one works until the grace ends', async () => {
      const old = await createKey(stack, owner, {
        name: 'rotated',
        scopes: ['inference'],
        models: ['demo-small'],
        requests_per_minute: 50,
        tokens_per_minute: 5000,
      });
      const started = Date.now();
      const answer = await rotate(old.id, { grace_minutes: 5 });
      expect(answer.status, answer.text).toBe(201);
      expect(answer.headers.get('cache-control')).toBe('no-store');
      const rotated = JSON.parse(answer.text) as RotatedKey;
      expect(rotated).toMatchObject({
        name: 'rotated',
        scopes: ['inference'],
        models: ['demo-small'],
        requests_per_minute: 50,
        tokens_per_minute: 5000,
        replaces: old.id,
        grace_minutes: 5,
      });
      expect(rotated.id).not.toBe(old.id);
      expect(rotated.key).not.toBe(old.key);

      expectFullStream(await streamChat(stack.url, old.key, chatBody('old')), 'old');
      expectFullStream(await streamChat(stack.url, rotated.key, chatBody('new')), 'new');
      expectApiError(
        await streamChat(stack.url, rotated.key, chatBody('x', { model: 'demo-large' })),
        403,
        'model_not_allowed',
      );
      expectApiError(await withKey(stack.url, rotated.key, '/v1/train', postJson({})), 403, 'insufficient_scope');
      const listedOld = (await listKeys(stack, owner)).find((listed) => listed.id === old.id)!;
      const graceEnds = Date.parse(listedOld.expires_at!);
      expect(graceEnds).toBeGreaterThanOrEqual(started + 5 * 60_000 - 1_000);
      expect(graceEnds).toBeLessThanOrEqual(Date.now() + 5 * 60_000);
      // The old key now expires within 7 days: its answers say so.
      expect((await withKey(stack.url, old.key, '/v1/models')).headers.get('x-warning')).toMatch(/expires/);
    });

    it('refuses to rotate a key twice (409 naming its replacement), so no replacement dies with the old key’s grace', async () => {
      const old = await createKey(stack, owner, { name: 'rotated twice', scopes: ['inference'] });
      const first = await rotate(old.id, { grace_minutes: 5 });
      expect(first.status, first.text).toBe(201);
      const replacement = JSON.parse(first.text) as RotatedKey;
      const again = await rotate(old.id, { grace_minutes: 5 });
      expect(expectApiError(again, 409, 'api_key_already_rotated').error.message).toContain(replacement.id);
      const listed = await listKeys(stack, owner);
      // The replacement keeps the old key's own expiry (none), not the grace the old key now lives by.
      expect(listed.find((listedKey) => listedKey.id === replacement.id)!.expires_at).toBeNull();
      expect(listed.filter((listedKey) => listedKey.name === old.name)).toHaveLength(2);
      expect((await rotate(replacement.id, { grace_minutes: 0 })).status).toBe(201);
    });

    it('with grace 0 refuses the old key at once as expired; the new key works', async () => {
      const old = await key({ scopes: ['inference'] });
      expect((await streamChat(stack.url, old.key, chatBody('before'))).status).toBe(200);
      const answer = await rotate(old.id, { grace_minutes: 0 });
      expect(answer.status, answer.text).toBe(201);
      const rotated = JSON.parse(answer.text) as RotatedKey;
      const refused = await streamChat(stack.url, old.key, chatBody('after'));
      expect(expectApiError(refused, 401, 'expired_api_key').error.message).not.toContain(old.key);
      expectFullStream(await streamChat(stack.url, rotated.key, chatBody('after')), 'after');
    });

    it('refuses rotation by an API key without the "keys" scope, from another origin, and with grace outside 0..10080 minutes', async () => {
      const target = await key({});
      const byKey = await withKey(stack.url, target.key, `/v1/auth/api-keys/${target.id}/rotate`, {
        ...jsonPost(stack.url, { grace_minutes: 0 }),
        headers: { 'content-type': 'application/json', origin: stack.url, authorization: `Bearer ${target.key}` },
      });
      expect(expectApiError(byKey, 403, 'insufficient_scope').error.message).toContain('"keys"');
      const crossSite = await rotate(target.id, { grace_minutes: 0 }, owner, { origin: 'https://evil.example' });
      expect(crossSite.status).toBe(403);
      for (const grace of [-1, 10_081, 1.5, '5', null]) {
        expect((await rotate(target.id, { grace_minutes: grace })).status, String(grace)).toBe(400);
      }
      expect((await rotate(target.id, { grace_minutes: 0, extra: true })).status).toBe(400);
      // Nothing above rotated it: the key still works.
      expect((await withKey(stack.url, target.key, '/v1/models')).status).toBe(200);
      expect((await rotate(target.id, { grace_minutes: 10_080 })).status).toBe(201);
    });

    it('answers 404 for a revoked key, an unknown id and someone else’s key', async () => {
      const revoked = await key({});
      const deleted = await owner.fetch(`${stack.url}/v1/auth/api-keys/${revoked.id}`, {
        method: 'DELETE',
        headers: { origin: stack.url },
      });
      expect(deleted.status).toBe(204);
      expectApiError(await rotate(revoked.id, { grace_minutes: 0 }), 404, 'api_key_not_found');
      expectApiError(await rotate('key_doesnotexist', { grace_minutes: 0 }), 404, 'api_key_not_found');
      const other = await signedInAs(stack, OTHER);
      const theirs = await createKey(stack, other, { name: 'theirs' });
      expectApiError(await rotate(theirs.id, { grace_minutes: 0 }), 404, 'api_key_not_found');
      expect((await withKey(stack.url, theirs.key, '/v1/models')).status).toBe(200);
    });
  });

  describe('expiry warnings', () => {
    it('warns on every answer to a key expiring within 7 days, streams included', async () => {
      const soon = await key({ expires_in_days: 3 });
      const streamed = await streamChat(stack.url, soon.key, chatBody('soon'));
      expectFullStream(streamed, 'soon');
      const warning = streamed.headers.get('x-warning');
      expect(warning).toContain(soon.expires_at!);
      expect(warning).toContain('/v1/auth/account');
      expect((await withKey(stack.url, soon.key, '/v1/models')).headers.get('x-warning')).toBe(warning);
    });

    it('does not warn for a key expiring in 30 days, or never', async () => {
      for (const body of [{ expires_in_days: 30 }, {}]) {
        const later = await key(body);
        const streamed = await streamChat(stack.url, later.key, chatBody('later'));
        expectFullStream(streamed, 'later');
        expect(streamed.headers.get('x-warning')).toBeNull();
      }
    });

    it('flags the key on the account page: "expires in 3 days"', async () => {
      const soon = await createKey(stack, owner, { name: 'soon on page', expires_in_days: 3 });
      const later = await createKey(stack, owner, { name: 'later on page', expires_in_days: 30 });
      const page = await (await owner.fetch(`${stack.url}/v1/auth/account`)).text();
      const row = (id: string) => new RegExp(`<tr data-key-id="${id}">[\\s\\S]*?</tr>`).exec(page)![0];
      expect(row(soon.id)).toContain('expires in 3 days');
      expect(row(later.id)).not.toContain('expires in');
    });
  });

  describe('leak reports at /v1/auth/api-keys/leaked', () => {
    const report = (body: unknown) =>
      fetch(`${stack.url}/v1/auth/api-keys/leaked`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      }).then(read);
    const entry = (token: unknown) => ({
      token,
      type: 'gatehouse_api_key',
      url: 'https://github.com/someone/project/blob/main/.env',
      source: 'content',
    });

    it('revokes a reported live key without credentials; later use is 401 revoked_api_key, and the audit says so', async () => {
      const leaked = await key({});
      expectFullStream(await streamChat(stack.url, leaked.key, chatBody('before')), 'before');
      const answer = await report([entry(leaked.key)]);
      expect(answer.status, answer.text).toBeGreaterThanOrEqual(200);
      expect(answer.status).toBeLessThan(300);
      expect(answer.text).not.toContain(leaked.id);
      expect(
        expectApiError(await streamChat(stack.url, leaked.key, chatBody('after')), 401, 'revoked_api_key').error
          .message,
      ).toMatch(/revoked/);
      expect((await listKeys(stack, owner)).find((listed) => listed.id === leaked.id)!.revoked_at).not.toBeNull();

      await expect
        .poll(async () => {
          const exported = await owner.fetch(`${stack.url}/v1/auth/admin/audit?event=key_revoked`);
          const lines = (await exported.text()).trim().split('\n').filter(Boolean);
          return lines.map((line) => JSON.parse(line) as AuditLine).find((line) => line.target === leaked.id);
        })
        .toMatchObject({ event: 'key_revoked', detail: { by: 'leak_report' } });
    });

    it('answers identically whether the report held live keys, fake keys, strings or malformed entries', async () => {
      const live = await Promise.all([key({}), key({}), key({})]);
      const batches: Array<[string, unknown[]]> = [
        ['live keys', live.map((created) => entry(created.key))],
        ['well-formed keys never issued', [1, 2, 3].map(() => entry(generateApiKey('gth_')))],
        ['strings that are not keys', [entry('not a key'), entry('gth_short'), 'plain string']],
        ['malformed entries', [entry(42), null, { type: 'gatehouse_api_key' }]],
        ['more malformed entries', [[], 7, entry('x'.repeat(5_000))]],
      ];
      const answers: Array<[string, number, string]> = [];
      for (const [label, batch] of batches) {
        const answer = await report(batch);
        answers.push([label, answer.status, answer.text]);
      }
      const [, firstStatus, firstBody] = answers[0]!;
      expect(answers).toEqual(batches.map(([label]) => [label, firstStatus, firstBody]));
      for (const created of live)
        expectApiError(await withKey(stack.url, created.key, '/v1/models'), 401, 'revoked_api_key');
    });

    it('refuses more than 1000 entries with 413 and revokes none of them; 1000 are accepted', async () => {
      const survivor = await key({});
      const tooMany = [entry(survivor.key), ...Array.from({ length: 1_000 }, () => entry(generateApiKey('gth_')))];
      expectApiError(await report(tooMany), 413, 'report_too_large');
      expect((await withKey(stack.url, survivor.key, '/v1/models')).status).toBe(200);
      const accepted = await report(tooMany.slice(1));
      expect(accepted.status).toBeLessThan(300);
      expect((await withKey(stack.url, survivor.key, '/v1/models')).status).toBe(200);
    });

    it('refuses a report that is not an array with 400, revoking nothing', async () => {
      const survivor = await key({});
      for (const body of [entry(survivor.key), { tokens: [survivor.key] }, survivor.key, 42, null]) {
        const answer = await report(body);
        expectApiError(answer, 400, 'invalid_report');
      }
      expect((await withKey(stack.url, survivor.key, '/v1/models')).status).toBe(200);
    });
  });
});

describe('key limits with auth.key_requests_per_minute 3 and caps of 10 requests and 1000 tokens', () => {
  let stack: FaultyStack;
  let owner: Browserless;
  beforeAll(async () => {
    stack = await startControlsStack({
      key_requests_per_minute: 3,
      max_key_requests_per_minute: 10,
      max_key_tokens_per_minute: 1_000,
    });
    owner = await signedInAs(stack);
  });
  afterAll(() => stack.close());

  it('refuses a per-key limit above the cap with 400, on the JSON API and on the account form', async () => {
    for (const [body, code] of [
      [{ requests_per_minute: 11 }, 'requests_per_minute_too_high'],
      [{ tokens_per_minute: 1_001 }, 'tokens_per_minute_too_high'],
    ] as const) {
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys`, jsonPost(stack.url, { name: 'x', ...body }));
      const message = expectApiError(await read(response), 400, code).error.message;
      expect(message).toContain(code.startsWith('requests') ? '10' : '1000');
    }
    const form = await owner.fetch(`${stack.url}/v1/auth/account/keys`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: stack.url },
      body: new URLSearchParams({ name: 'too fast', requests_per_minute: '11', form_token: 'cap-form' }).toString(),
    });
    expect(form.status).toBe(400);
    expect(await form.text()).toContain('at most 10');
    expect((await listKeys(stack, owner)).some((listed) => listed.name === 'too fast')).toBe(false);
    const atCap = await createKey(stack, owner, { name: 'at cap', requests_per_minute: 10, tokens_per_minute: 1_000 });
    expect(atCap).toMatchObject({ requests_per_minute: 10, tokens_per_minute: 1_000 });
  });

  it(
    'holds a key with its own limit of 4 to it, above the default',
    async () => {
      const four = await createKey(stack, owner, { name: 'four', requests_per_minute: 4 });
      await inOneMinuteWindow();
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await streamChat(stack.url, four.key, chatBody(`n${i}`))).status);
      expect(statuses).toEqual([200, 200, 200, 200, 429]);
    },
    SLOW_TEST_MS,
  );

  it(
    'holds a key without its own limit to auth.key_requests_per_minute (3), not to the cap',
    async () => {
      const defaulted = await createKey(stack, owner, { name: 'defaulted' });
      await inOneMinuteWindow();
      const answers: Streamed[] = [];
      for (let i = 0; i < 4; i++) answers.push(await streamChat(stack.url, defaulted.key, chatBody(`d${i}`)));
      expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 429]);
      expect(answers[0]!.headers.get('x-ratelimit-limit-requests')).toBe('3');
      expectLimited(answers[3]!, 'rate_limit_exceeded', 3);
    },
    SLOW_TEST_MS,
  );
});

describe('per-user limits across keys: user_requests_per_minute 4, user_tokens_per_minute 30', () => {
  let stack: FaultyStack;
  beforeAll(async () => {
    stack = await startControlsStack({ user_requests_per_minute: 4, user_tokens_per_minute: 30 });
  });
  afterAll(() => stack.close());

  it(
    'counts the requests of all a user’s keys together: the 5th is refused with 429 naming the account',
    async () => {
      const owner = await signedInAs(stack, OWNER);
      const [first, second] = [
        await createKey(stack, owner, { name: 'a' }),
        await createKey(stack, owner, { name: 'b' }),
      ];
      await inOneMinuteWindow();
      for (let i = 0; i < 4; i++) {
        const streamed = await streamChat(stack.url, (i % 2 ? second : first).key, chatBody('hi'));
        expect(streamed.status, `request ${i + 1}`).toBe(200);
      }
      for (const refusedKey of [first, second]) {
        const refused = await streamChat(stack.url, refusedKey.key, chatBody('hi'));
        expect(expectLimited(refused, 'rate_limit_exceeded', 4)).toMatch(/your account/);
      }
    },
    SLOW_TEST_MS,
  );

  it(
    'counts the tokens of all a user’s keys together',
    async () => {
      const other = await signedInAs(stack, OTHER);
      const spender = await createKey(stack, other, { name: 'spender' });
      const bystander = await createKey(stack, other, { name: 'bystander' });
      await inOneMinuteWindow();
      expectFullStream(await streamChat(stack.url, spender.key, chatBody(words(20))), words(20));
      const refused = await untilRefused(() => withKey(stack.url, bystander.key, '/v1/models'));
      expect(expectLimited(refused, 'tokens_limit_exceeded', 30)).toMatch(/your account/);
    },
    SLOW_TEST_MS,
  );
});

describe('a scope mapping configured in auth.scope_paths', () => {
  let stack: FaultyStack;
  let owner: Browserless;
  beforeAll(async () => {
    stack = await startControlsStack({
      scope_paths: { inference: ['^/v1/chat/completions$', '^/echo/generate$'], training: ['^/echo/learn(/|$)'] },
    });
    owner = await signedInAs(stack);
  });
  afterAll(() => stack.close());

  it('opens the configured paths and no longer the shipped ones', async () => {
    const inference = await createKey(stack, owner, { name: 'inference', scopes: ['inference'] });
    expectFullStream(await streamChat(stack.url, inference.key, chatBody('mapped')), 'mapped');
    expect((await withKey(stack.url, inference.key, '/echo/generate', postJson({ prompt: 'x' }))).status).toBe(200);
    const completions = await withKey(stack.url, inference.key, '/v1/completions', postJson({ prompt: 'x' }));
    expect(expectApiError(completions, 403, 'insufficient_scope').error.message).toContain('"all"');
    expect(
      expectApiError(await withKey(stack.url, inference.key, '/v1/models'), 403, 'insufficient_scope').error.message,
    ).toContain('"read"');

    const training = await createKey(stack, owner, { name: 'training', scopes: ['training'] });
    expect((await withKey(stack.url, training.key, '/echo/learn/run', postJson({}))).status).toBe(200);
    const shipped = await withKey(stack.url, training.key, '/v1/fine_tuning/jobs', postJson({}));
    expect(expectApiError(shipped, 403, 'insufficient_scope').error.message).toContain('"all"');
    const generate = await withKey(stack.url, training.key, '/echo/generate', postJson({}));
    expect(expectApiError(generate, 403, 'insufficient_scope').error.message).toContain('"inference"');
  });
});

describe('gatehouse keys create with --scopes, --models and --requests-per-minute', () => {
  const run = promisify(execFile);
  let stack: FaultyStack;
  let configFile: string;
  beforeAll(async () => {
    const dir = tempDir();
    const storage = { database: { url: `sqlite:${join(dir, 'gatehouse.db')}` }, gateway: { data_dir: dir } };
    stack = await startFaultyStack({ ...storage, auth: { failed_auth_per_minute: 0 } });
    configFile = join(dir, 'llama_config_edits.yaml');
    // JSON is YAML; the CLI opens the gateway's database and key-hashing secret.
    writeFileSync(
      configFile,
      JSON.stringify(signInThrough(stack.url, stack.provider.metadataUrl, stack.platform.url, storage)),
    );
  });
  afterAll(() => stack.close());

  const gatehouse = async (args: string[]) => {
    try {
      const { stdout, stderr } = await run(process.execPath, [...CLI, ...args, '--config', configFile]);
      return { code: 0, stdout, stderr };
    } catch (error) {
      const failed = error as { code: number; stdout: string; stderr: string };
      return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
    }
  };

  it(
    'creates a key that honours its scope, its model and its limit of 2 requests a minute',
    async () => {
      const created = await gatehouse([
        'keys',
        'create',
        '--email',
        OWNER.email,
        '--name',
        'cli-controls',
        '--scopes',
        'inference',
        '--models',
        'demo-small',
        '--requests-per-minute',
        '2',
      ]);
      expect(created.code, created.stderr).toBe(0);
      const cliKey = /^gth_[0-9A-Za-z]{36}$/m.exec(created.stdout)![0];
      await inOneMinuteWindow();

      const training = await withKey(stack.url, cliKey, '/v1/fine_tuning/jobs', postJson({ model: 'demo-small' }));
      expect(expectApiError(training, 403, 'insufficient_scope').error.message).toContain('"training"');
      const forwarded = stack.platform.requests.length;
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        const streamed = await streamChat(stack.url, cliKey, chatBody(`cli ${i}`));
        statuses.push(streamed.status);
        if (streamed.status === 200) expectFullStream(streamed, `cli ${i}`);
        else expectLimited(streamed, 'rate_limit_exceeded', 2);
      }
      expect(statuses).toEqual([200, 200, 429]);
      expect(stack.platform.requests.length).toBe(forwarded + 2);
    },
    SLOW_TEST_MS,
  );

  it(
    'refuses the wrong model for a CLI key',
    async () => {
      const created = await gatehouse([
        'keys',
        'create',
        '--email',
        OWNER.email,
        '--name',
        'cli-model',
        '--models',
        'demo-small',
      ]);
      expect(created.code, created.stderr).toBe(0);
      const cliKey = /^gth_[0-9A-Za-z]{36}$/m.exec(created.stdout)![0];
      expectApiError(
        await streamChat(stack.url, cliKey, chatBody('x', { model: 'demo-large' })),
        403,
        'model_not_allowed',
      );
      expectFullStream(await streamChat(stack.url, cliKey, chatBody('fine')), 'fine');
    },
    SLOW_TEST_MS,
  );

  it(
    'refuses an unknown scope with a message naming the valid ones, and creates nothing',
    async () => {
      const refused = await gatehouse([
        'keys',
        'create',
        '--email',
        OWNER.email,
        '--name',
        'bad',
        '--scopes',
        'everything',
      ]);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain('inference, training, read, all');
      const listed = await gatehouse(['keys', 'list']);
      expect(listed.stdout).not.toMatch(/\tbad$/m);
    },
    SLOW_TEST_MS,
  );
});

describe.skipIf(!redisAvailable)('limits shared through Redis by two gateways on one database', () => {
  const prefix = `gatehouse-controls-${randomBytes(4).toString('hex')}:`;
  const database = testDatabase();
  let provider: FaultyProvider;
  let platform: SamplePlatform;
  let first: RunningGateway;
  let second: RunningGateway;
  let owner: Browserless;

  beforeAll(async () => {
    const dir = tempDir();
    if (database.url === 'sqlite::memory:') database.url = `sqlite:${join(dir, 'gatehouse.db')}`;
    const firstPort = await freePort();
    platform = await startSamplePlatform({ chunkDelayMs: 20 });
    provider = await startFaultyProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUri: `http://127.0.0.1:${firstPort}/v1/auth/auth`,
    });
    const edits = (website: string) =>
      signInThrough(website, provider.metadataUrl, platform.url, {
        auth: { failed_auth_per_minute: 0 },
        // One data_dir: both hash keys with the same generated secret, as replicas share one.
        gateway: { data_dir: dir },
        database,
        redis: { url: REDIS_URL, key_prefix: prefix },
      });
    first = await startGateway(edits, firstPort);
    second = await startGateway(edits);
    owner = new Browserless();
    await signInForSession(first, owner);
  });

  afterAll(async () => {
    await first?.close();
    await second?.close();
    await Promise.all([platform?.close(), provider?.close()]);
    await deleteRedisKeys(prefix);
    if (typeof database.schema === 'string') await dropSchema(database.schema);
  });

  it(
    'admits exactly 5 of 20 concurrent streaming requests, 10 on each gateway, to a 5/min key',
    async () => {
      const five = await createKey(first, owner, { name: 'shared five', requests_per_minute: 5 });
      await inOneMinuteWindow();
      const forwarded = platform.requests.length;
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => streamChat((i % 2 ? second : first).url, five.key, chatBody(`r${i}`))),
      );
      const statuses = answers.map((answer) => answer.status);
      expect(statuses.filter((status) => status === 200)).toHaveLength(5);
      expect(statuses.filter((status) => status === 429)).toHaveLength(15);
      for (const answer of answers) {
        if (answer.status === 200) expect(answer.payloads.at(-1)).toBe('[DONE]');
        else expectLimited(answer, 'rate_limit_exceeded', 5);
      }
      expect(platform.requests.length).toBe(forwarded + 5);
    },
    SLOW_TEST_MS,
  );

  it(
    'refuses a 30 tokens/min key on one gateway once a stream through the other spent its tokens',
    async () => {
      const thirty = await createKey(first, owner, { name: 'shared tokens', tokens_per_minute: 30 });
      await inOneMinuteWindow();
      expectFullStream(await streamChat(first.url, thirty.key, chatBody(words(20))), words(20));
      const refused = await untilRefused(() => withKey(second.url, thirty.key, '/v1/models'));
      expectLimited(refused, 'tokens_limit_exceeded', 30);
    },
    SLOW_TEST_MS,
  );

  it('counts usage from both gateways in the one database', async () => {
    const counted = await createKey(first, owner, { name: 'shared usage' });
    expectFullStream(await streamChat(first.url, counted.key, chatBody('from one')), 'from one');
    expectFullStream(await streamChat(second.url, counted.key, chatBody('from two')), 'from two');
    const row = await usageRowOf(second.url, counted, (entry) => entry.requests >= 2);
    expect(row).toMatchObject({ requests: 2, prompt_tokens: 4, completion_tokens: 8 });
  });
});
