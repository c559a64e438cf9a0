/**
 * The access log (issue 14, "No access log"): one `info` line per request on both HTTP stacks, with
 * who asked and what it cost but never a credential, and `X-Request-Id` on every answer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GATEWAY_BODY_LIMIT } from '../../src/http/body-parsers.js';
import { Browserless } from '../support/browserless.js';
import { createKey } from '../support/keys.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MIB = 1024 * 1024;
const QUERY_SECRET = 'query-secret-4c9e1b7a';
const COOKIE_SECRET = 'cookie-secret-8d2f6a3e';

interface AccessLine {
  msg: string;
  level: number;
  reqId: string;
  method: string;
  path: string;
  status: number;
  durationMs: number;
  client: string;
  sub?: string;
  keyId?: string;
  model?: string;
  promptTokens?: number;
  completionTokens?: number;
}

function accessLines(stack: FaultyStack): AccessLine[] {
  return stack.logs
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as AccessLine)
    .filter((line) => line.msg === 'request');
}

/** The access line of request `id`, once written (the close event that writes it follows the answer). */
async function accessLineOf(stack: FaultyStack, id: string): Promise<AccessLine> {
  await expect.poll(() => accessLines(stack).filter((line) => line.reqId === id)).toHaveLength(1);
  return accessLines(stack).find((line) => line.reqId === id)!;
}

function chat(stream = false): RequestInit {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo-chat', messages: [{ role: 'user', content: 'hello there' }], stream }),
  };
}

let stack: FaultyStack;
let browser: Browserless;
let session: string;
let key: string;
let keyId: string;

function withKey(init: RequestInit = {}, id?: string): RequestInit {
  return {
    ...init,
    headers: {
      ...(init.headers as Record<string, string>),
      authorization: `Bearer ${key}`,
      cookie: `tracking=${COOKIE_SECRET}`,
      ...(id ? { 'x-request-id': id } : {}),
    },
  };
}

beforeAll(async () => {
  stack = await startFaultyStack({ gateway: { max_checked_body_mb: 1 } });
  browser = new Browserless();
  session = await signInForSession(stack, browser);
  ({ key, id: keyId } = await createKey(stack, browser, { name: 'access-log' }));
});

afterAll(() => stack?.close());

describe('the access log', () => {
  it('logs a key request with method, path, status, key, model and tokens, and no credential', async () => {
    const response = await fetch(
      `${stack.url}/v1/chat/completions?api_key=${QUERY_SECRET}`,
      withKey(chat(), 'access-key-request'),
    );
    expect(response.status).toBe(200);
    await response.text();
    const line = await accessLineOf(stack, 'access-key-request');
    expect(line).toMatchObject({
      level: 30,
      method: 'POST',
      path: '/v1/chat/completions',
      status: 200,
      client: '127.0.0.1',
      sub: stack.provider.subject,
      keyId,
      model: 'demo-chat',
    });
    expect(line.promptTokens).toBeGreaterThan(0);
    expect(line.completionTokens).toBeGreaterThan(0);
    expect(line.durationMs).toBeGreaterThanOrEqual(0);
    const text = JSON.stringify(line);
    for (const secret of [key, key.slice(key.indexOf('_') + 1), COOKIE_SECRET, QUERY_SECRET, 'api_key', session])
      expect(text).not.toContain(secret);
  });

  it('logs a session request with the user and no key', async () => {
    const response = await browser.fetch(`${stack.url}/v1/models?api_key=${QUERY_SECRET}`, {
      headers: { 'x-request-id': 'access-session-request' },
    });
    expect(response.status).toBe(200);
    const line = await accessLineOf(stack, 'access-session-request');
    expect(line).toMatchObject({ method: 'GET', path: '/v1/models', status: 200, sub: stack.provider.subject });
    expect(line.keyId).toBeUndefined();
    expect(JSON.stringify(line)).not.toContain(session);
    expect(JSON.stringify(line)).not.toContain(QUERY_SECRET);
  });

  it('logs a refused request without the credential it came with', async () => {
    const forged = `${key.slice(0, -4)}AAAA`;
    const response = await fetch(`${stack.url}/v1/models`, {
      headers: { authorization: `Bearer ${forged}`, 'x-request-id': 'access-refused-request' },
    });
    expect(response.status).toBe(401);
    const line = await accessLineOf(stack, 'access-refused-request');
    expect(line).toMatchObject({ method: 'GET', path: '/v1/models', status: 401 });
    expect(line.sub).toBeUndefined();
    expect(line.keyId).toBeUndefined();
    expect(JSON.stringify(line)).not.toContain(forged.slice(forged.indexOf('_') + 1));
  });

  it('logs a stream once it ends, with its model and tokens', async () => {
    const response = await fetch(`${stack.url}/v1/chat/completions`, withKey(chat(true), 'access-stream-request'));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    await response.text();
    const line = await accessLineOf(stack, 'access-stream-request');
    expect(line).toMatchObject({ path: '/v1/chat/completions', status: 200, keyId, model: 'demo-chat' });
    expect(line.completionTokens).toBeGreaterThan(0);
  });

  it("logs the gateway's own routes through the same line", async () => {
    const response = await browser.fetch(`${stack.url}/v1/auth/api-keys?api_key=${QUERY_SECRET}`, {
      headers: { 'x-request-id': 'access-gateway-request' },
    });
    expect(response.status).toBe(200);
    const line = await accessLineOf(stack, 'access-gateway-request');
    expect(line).toMatchObject({
      method: 'GET',
      path: '/v1/auth/api-keys',
      status: 200,
      client: '127.0.0.1',
      sub: stack.provider.subject,
    });
    expect(JSON.stringify(line)).not.toContain(QUERY_SECRET);
  });

  it('writes no line with gateway.access_log: false, on either stack', async () => {
    const quiet = await startFaultyStack({ gateway: { access_log: false } });
    try {
      for (const path of ['/healthz', '/v1/models', '/v1/auth/nothing-here']) {
        const response = await fetch(`${quiet.url}${path}`, { headers: { 'x-request-id': `quiet-${path}` } });
        expect(response.headers.get('x-request-id')).toBe(`quiet-${path}`);
      }
      expect(accessLines(quiet)).toEqual([]);
    } finally {
      await quiet.close();
    }
  });
});

describe('X-Request-Id', () => {
  const oversized = JSON.stringify({ model: 'demo-chat', prompt: 'x'.repeat(MIB) });
  const gatewayOversized = JSON.stringify(['x'.repeat(GATEWAY_BODY_LIMIT.bytes)]);
  const answers: [stack: string, status: number, path: string, init: () => RequestInit][] = [
    ['platform', 200, '/v1/models', () => withKey()],
    ['platform', 401, '/v1/models', () => ({})],
    ['platform', 404, '/v1/no-such-path', () => withKey()],
    ['platform', 405, '/v1/models', () => withKey({ method: 'PROPFIND' })],
    [
      'platform',
      413,
      '/v1/completions',
      () => withKey({ method: 'POST', headers: { 'content-type': 'application/json' }, body: oversized }),
    ],
    ['gateway', 200, '/healthz', () => ({})],
    ['gateway', 401, '/v1/auth/api-keys', () => ({})],
    ['gateway', 404, '/v1/auth/no-such-page', () => ({})],
    [
      'gateway',
      413,
      '/v1/auth/api-keys/leaked',
      () => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: gatewayOversized }),
    ],
  ];

  it.each(answers)("echoes the client's id on the %s stack's %i (%s)", async (_stack, status, path, init) => {
    const request = init();
    const id = `client-${status}-${path}`;
    const response = await fetch(`${stack.url}${path}`, {
      ...request,
      headers: { ...(request.headers as Record<string, string>), 'x-request-id': id },
    });
    expect(response.status).toBe(status);
    expect(response.headers.get('x-request-id')).toBe(id);
    await response.arrayBuffer();
  });

  it.each([
    ['platform', '/v1/models'],
    ['gateway', '/healthz'],
  ])('answers a generated id on the %s stack when the client sent an unusable one', async (_stack, path) => {
    for (const sent of [undefined, 'has spaces in it', 'x'.repeat(201)]) {
      const response = await fetch(`${stack.url}${path}`, withKey({}, sent));
      expect(response.headers.get('x-request-id')).toMatch(UUID);
      await response.arrayBuffer();
    }
  });
});
