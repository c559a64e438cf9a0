/**
 * The README's platform recipes, run against the sample platform standing in for each: vLLM's
 * OpenAI API behind the platform's own key, Ollama's native API in the `inference` scope, and Open
 * WebUI signing people in from the `X-Forwarded-Email` header Gatehouse sets.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';
import { createKey } from '../support/keys.js';

const VLLM_API_KEY = 'sk-vllm-recipe-7e1c0b5d';
const PERSON = 'ada@example.test';

let stack: FaultyStack;
let browser: Browserless;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-recipes-'));
  // The recipes' config: the platform's root as upstream, its own key, nothing else changed.
  stack = await startFaultyStack({
    gateway: { upstream_api_key: VLLM_API_KEY, data_dir: join(dir, 'data') },
    auth: { failed_auth_per_minute: 0 },
  });
  stack.provider.email = PERSON;
  browser = new Browserless();
  await signInForSession(stack, browser);
});

afterAll(async () => {
  await stack?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function newKey(body: Record<string, unknown>): Promise<string> {
  return (await createKey(stack, browser, { name: 'recipe', ...body })).key;
}

function post(key: string, path: string, body: unknown): Promise<Response> {
  return fetch(`${stack.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

const lastRequestTo = (path: string) => stack.platform.requests.findLast((request) => request.url === path);

describe('vLLM (OpenAI-compatible, started with --api-key)', () => {
  it("streams a chat completion to a key holder, sending the platform its own key instead of the caller's", async () => {
    const key = await newKey({ scopes: ['inference'] });
    const response = await post(key, '/v1/chat/completions', {
      model: 'demo-small',
      stream: true,
      messages: [{ role: 'user', content: 'hello vllm' }],
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(await response.text()).toContain('data: [DONE]');
    expect(lastRequestTo('/v1/chat/completions')?.headers.authorization).toBe(`Bearer ${VLLM_API_KEY}`);
  });
});

describe("Ollama's native API", () => {
  it('streams /api/chat as newline-delimited JSON to an inference key, as Ollama does by default', async () => {
    const key = await newKey({ scopes: ['inference'] });
    const response = await post(key, '/api/chat', {
      model: 'demo-small',
      messages: [{ role: 'user', content: 'hello ollama' }],
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/x-ndjson');
    const lines = (await response.text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { message: { content: string }; done: boolean });
    expect(lines.map((line) => line.message.content).join('')).toBe('You said: hello ollama');
    expect(lines.at(-1)?.done).toBe(true);
    expect(lastRequestTo('/api/chat')?.headers.authorization).toBe(`Bearer ${VLLM_API_KEY}`);
  });

  it('lets an inference key use /api/generate, /api/embed and /api/tags', async () => {
    const key = await newKey({ scopes: ['inference'] });
    const generated = await post(key, '/api/generate', { model: 'demo-small', prompt: 'why', stream: false });
    expect(generated.status).toBe(200);
    expect(((await generated.json()) as { response: string }).response).toBe('Echo: why');
    const embedded = await post(key, '/api/embed', { model: 'demo-small', input: ['a b', 'c'] });
    expect(embedded.status).toBe(200);
    expect(((await embedded.json()) as { embeddings: number[][] }).embeddings).toHaveLength(2);
    const tags = await fetch(`${stack.url}/api/tags`, { headers: { authorization: `Bearer ${key}` } });
    expect(tags.status).toBe(200);
  });

  it('refuses /api/chat to a key without the inference scope, before the platform sees it', async () => {
    const key = await newKey({ scopes: ['training'] });
    const before = stack.platform.requests.length;
    const refused = await post(key, '/api/chat', { model: 'demo-small', messages: [] });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('insufficient_scope');
    expect(stack.platform.requests.length).toBe(before);
  });

  it("checks /api/chat's model against a key's model allow-list", async () => {
    const key = await newKey({ scopes: ['inference'], models: ['demo-small'] });
    const refused = await post(key, '/api/chat', { model: 'demo-large', messages: [] });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('model_not_allowed');
  });
});

describe('Open WebUI behind Gatehouse (trusted-header sign-in)', () => {
  it("hands Open WebUI the signed-in person's email in X-Forwarded-Email, never the browser's own copy", async () => {
    const response = await browser.fetch(`${stack.url}/echo/webui`, {
      headers: { accept: 'text/html', 'x-forwarded-email': 'admin@evil.example' },
    });
    expect(response.status).toBe(200);
    const seen = (await response.json()) as { headers: Record<string, string> };
    expect(seen.headers['x-forwarded-email']).toBe(PERSON);
  });

  it('sends a browser without a session to sign in, not to Open WebUI', async () => {
    const before = stack.platform.requests.length;
    const response = await fetch(`${stack.url}/`, { headers: { accept: 'text/html' }, redirect: 'manual' });
    expect(response.status).toBe(302);
    expect(response.headers.get('location')).toMatch(/\/v1\/auth\/login\?return_to=/);
    expect(stack.platform.requests.length).toBe(before);
  });
});
