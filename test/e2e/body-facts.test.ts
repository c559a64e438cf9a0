/**
 * What the gateway reads in a platform request and what it passes on (issue 12, findings 5, 6 and 9;
 * issue 13's gateway.upstream_cookies): every spelling of a streaming request gets the usage tap and
 * is charged, every field a platform reads as the model is checked, and the identity headers and
 * cookies the platform receives are the gateway's choice. The platform here is a stand-in that
 * reads bodies as FastAPI and pydantic do, and records every request it receives.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';
import { expectApiError } from '../support/api-error.js';
import { createKey } from '../support/keys.js';
import { inOneMinuteWindow, untilStatus } from '../support/wait.js';

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

interface PydanticPlatform {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

/** Tokens each completion reports: prompt + completion. */
const PROMPT_TOKENS = 10;
const COMPLETION_TOKENS = 10;
/** Below one completion's tokens, so a key with it is refused right after one counted completion. */
const TOKENS_PER_MINUTE = PROMPT_TOKENS + COMPLETION_TOKENS - 5;

/** pydantic's bool: what FastAPI platforms (vLLM, Lamini) accept as `stream`. */
function pydanticBool(value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  if (value === 0 || value === 1) return value === 1;
  if (typeof value === 'string' && ['true', '1', 'yes', 'on', 't', 'y'].includes(value.toLowerCase())) return true;
  return false;
}

/**
 * A platform that parses a body as JSON when its Content-Type is JSON or missing (as FastAPI does),
 * streams whenever pydantic reads `stream` as true, and reports usage in a stream only when asked
 * with `stream_options.include_usage`, as OpenAI and vLLM do. Any other path answers `{}`.
 */
async function startPydanticPlatform(): Promise<PydanticPlatform> {
  const received: Received[] = [];
  const server: Server = createServer((request, response) => {
    const parts: Buffer[] = [];
    request.on('data', (part: Buffer) => parts.push(part));
    request.on('end', () => {
      const body = Buffer.concat(parts).toString('utf8');
      received.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body });
      const type = request.headers['content-type'];
      let json: Record<string, unknown> = {};
      try {
        if (body !== '' && (type === undefined || type.startsWith('application/json'))) {
          json = JSON.parse(body) as typeof json;
        }
      } catch {
        response.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"message":"bad json"}}');
        return;
      }
      if (request.url !== '/v1/chat/completions') {
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        return;
      }
      const usage = { prompt_tokens: PROMPT_TOKENS, completion_tokens: COMPLETION_TOKENS, total_tokens: 20 };
      if (!pydanticBool(json.stream)) {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ choices: [], usage }));
        return;
      }
      const includeUsage = (json.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (choices: unknown[], totals: unknown) =>
        `data: ${JSON.stringify({ choices, ...(includeUsage ? { usage: totals } : {}) })}\n\n`;
      response.write(chunk([{ index: 0, delta: { content: 'hi' } }], null));
      if (includeUsage) response.write(chunk([], usage));
      response.end('data: [DONE]\n\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

async function send(url: string, key: string, path: string, init: RequestInit = {}): Promise<Answer> {
  const response = await fetch(`${url}${path}`, {
    ...init,
    headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${key}` },
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

function postJson(body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) {
  // Bytes, so that fetch adds no Content-Type of its own where the test leaves it out.
  return {
    method: 'POST',
    headers,
    body: new TextEncoder().encode(typeof body === 'string' ? body : JSON.stringify(body)),
  };
}

describe('what the gateway reads in a platform request', () => {
  let platform: PydanticPlatform;
  let stack: FaultyStack;
  let owner: Browserless;
  beforeAll(async () => {
    platform = await startPydanticPlatform();
    stack = await startFaultyStack({
      auth: { failed_auth_per_minute: 0 },
      gateway: { upstream: platform.url, strip_headers: ['X-Corp-User', 'X-Tenant-*'] },
    });
    owner = new Browserless();
    await signInForSession(stack, owner);
  });
  afterAll(async () => {
    await stack.close();
    await platform.close();
  });

  async function newKey(controls: Record<string, unknown> = {}): Promise<string> {
    return (await createKey(stack, owner, { name: 'body facts', ...controls })).key;
  }

  /** The platform's requests since `from`, as JSON bodies. */
  const forwardedSince = (from: number) => platform.received.slice(from);

  describe('a streaming request is one, however it is spelt (finding 5)', () => {
    const spellings: Array<[string, unknown, Record<string, string>]> = [
      ['"stream": 1', 1, { 'content-type': 'application/json' }],
      ['"stream": "true"', 'true', { 'content-type': 'application/json' }],
      ['"stream": "yes"', 'yes', { 'content-type': 'application/json' }],
      ['"stream": true without a Content-Type', true, {}],
    ];
    for (const [name, stream, headers] of spellings) {
      it(`adds the usage tap to ${name} and charges its tokens to the key's limit`, async () => {
        await inOneMinuteWindow(10_000);
        const key = await newKey({ tokens_per_minute: TOKENS_PER_MINUTE });
        const from = platform.received.length;
        const first = await send(
          stack.url,
          key,
          '/v1/chat/completions',
          postJson({ model: 'm', stream, messages: [] }, headers),
        );
        expect(first.status, first.text).toBe(200);
        expect(first.headers.get('content-type')).toMatch(/^text\/event-stream/);
        // The usage-only chunk the gateway asked for is not the client's.
        expect(first.text).not.toContain('"usage"');
        expect(first.text).toContain('data: [DONE]');
        const forwarded = JSON.parse(forwardedSince(from)[0]!.body) as Record<string, unknown>;
        expect(forwarded.stream).toEqual(stream);
        expect(forwarded.stream_options).toEqual({ include_usage: true });
        // Tokens are charged once the answer has ended: the next request is refused.
        const next = await untilStatus(
          () => send(stack.url, key, '/v1/chat/completions', postJson({ model: 'm', stream, messages: [] }, headers)),
          429,
          { timeoutMs: 3_000 },
        );
        expectApiError(next, 429, 'tokens_limit_exceeded');
      });
    }

    it('refuses a "stream" no platform reads as true or false with 400 invalid_stream, platform untouched', async () => {
      const key = await newKey();
      const from = platform.received.length;
      for (const stream of ['maybe', '', [], {}, [true]]) {
        const answer = await send(stack.url, key, '/v1/chat/completions', postJson({ stream, messages: [] }));
        expectApiError(answer, 400, 'invalid_stream');
      }
      expect(forwardedSince(from)).toEqual([]);
    });

    it('forwards a request that does not stream byte for byte: false, 0, "false", null', async () => {
      const key = await newKey();
      for (const stream of [false, 0, 'false', null]) {
        const from = platform.received.length;
        const body = `{ "stream" : ${JSON.stringify(stream)}, "messages": [] }`;
        expect((await send(stack.url, key, '/v1/chat/completions', postJson(body))).status).toBe(200);
        expect(forwardedSince(from)[0]!.body).toBe(body);
      }
    });

    it('keeps the client’s other stream_options, and its usage chunk when it asked for one', async () => {
      const key = await newKey();
      let from = platform.received.length;
      const own = { stream: 1, stream_options: { continuous_usage_stats: true }, messages: [] };
      await send(stack.url, key, '/v1/chat/completions', postJson(own));
      expect(JSON.parse(forwardedSince(from)[0]!.body).stream_options).toEqual({
        continuous_usage_stats: true,
        include_usage: true,
      });
      from = platform.received.length;
      const asked = await send(
        stack.url,
        key,
        '/v1/chat/completions',
        postJson({ stream: 'true', stream_options: { include_usage: true }, messages: [] }),
      );
      expect(asked.text).toContain('"usage":{"prompt_tokens"');
    });
  });

  describe('every field a platform reads as the model is checked (finding 6)', () => {
    let limited: string;
    beforeAll(async () => {
      limited = await newKey({ models: ['allowed', 'org/allowed'] });
    });

    const refused = async (path: string, init: RequestInit = {}) => {
      const from = platform.received.length;
      const message = expectApiError(await send(stack.url, limited, path, init), 403, 'model_not_allowed').error
        .message;
      expect(forwardedSince(from), `${path} reached the platform`).toEqual([]);
      return message;
    };
    const passed = async (path: string, init: RequestInit = {}) => {
      const from = platform.received.length;
      const answer = await send(stack.url, limited, path, init);
      expect(answer.status, `${path}: ${answer.text}`).toBe(200);
      expect(forwardedSince(from)).toHaveLength(1);
    };

    it('refuses {"model":"allowed","model_name":"other"}, and any other pair with one model not allowed', async () => {
      await refused('/v1/chat/completions', postJson({ model: 'allowed', model_name: 'other' }));
      await refused('/v1/completions', postJson({ model_name: 'allowed', model: 'other' }));
      await refused('/v1/chat/completions', postJson('{"model":"allowed","mod\\u0065l_name":"other"}'));
      await refused('/v1/chat/completions', postJson('{"model":"allowed","model":"other"}'));
    });

    it('lets Lamini’s client name an allowed model in model_name alone', async () => {
      await passed('/v1/completions', postJson({ model_name: 'allowed', prompt: 'x' }));
      await refused('/v1/completions', postJson({ model_name: 'other', prompt: 'x' }));
    });

    it('refuses a body without any model field with a message naming the field, not invalid_json', async () => {
      const message = await refused('/v1/chat/completions', postJson({ messages: [] }));
      expect(message).toContain('"model"');
      expect(message).toContain('allowed');
    });

    it('checks the id in /v1/models/{id}, slashes and escapes included', async () => {
      await passed('/v1/models/allowed');
      await passed('/v1/models/org/allowed');
      await refused('/v1/models/other');
      await refused('/v1/models/org%2Fother');
      await refused('/v1/models/other', { method: 'DELETE' });
    });

    it('checks Ollama’s model, name, source and destination on /api/*', async () => {
      await passed('/api/chat', postJson({ model: 'allowed', messages: [] }));
      await refused('/api/chat', postJson({ model: 'other', messages: [] }));
      await refused('/api/generate', postJson({ model: 'other', prompt: 'x' }));
      await refused('/api/embed', postJson({ model: 'other', input: 'x' }));
      await refused('/api/show', postJson({ name: 'other' }));
      await refused('/api/copy', postJson({ source: 'allowed', destination: 'other' }));
      await passed('/api/show', postJson({ model: 'allowed' }));
    });

    it('passes requests that need no body: GET, and an empty POST', async () => {
      await passed('/v1/files');
      await passed('/v1/fine_tuning/jobs/ft-1/cancel', { method: 'POST' });
      await passed('/v1/fine_tuning/jobs/ft-1/cancel', { method: 'POST', headers: { 'content-length': '0' } });
    });
  });

  describe('identity headers are the gateway’s alone (finding 9)', () => {
    const families = [
      'Remote-User',
      'X-Remote-User',
      'X-WEBAUTH-USER',
      'X-Authenticated-User',
      'X-Auth-Request-Email',
      'X-Amzn-Oidc-Identity',
      'X-MS-CLIENT-PRINCIPAL-NAME',
      'X-Goog-Authenticated-User-Email',
      'Cf-Access-Authenticated-User-Email',
      'X-Forwarded-Groups',
      'X-Forwarded-Client-Cert',
    ];

    it('never lets the platform see a client’s identity header of any family, nor one the operator listed', async () => {
      const key = await newKey();
      const from = platform.received.length;
      const operators = ['X-Corp-User', 'X-Tenant-Id'];
      const headers = Object.fromEntries([...families, ...operators].map((name) => [name, 'mallory@evil.test']));
      const answer = await send(stack.url, key, '/v1/files', { headers: { ...headers, 'x-unrelated': 'kept' } });
      expect(answer.status).toBe(200);
      const seen = forwardedSince(from)[0]!.headers;
      for (const name of [...families, ...operators]) {
        const value = seen[name.toLowerCase()];
        expect(value === undefined || !String(value).includes('mallory'), `${name}: ${String(value)}`).toBe(true);
      }
      expect(seen['x-unrelated']).toBe('kept');
      expect(seen['x-forwarded-user']).toBe('test-user-1');
    });
  });
});

describe('gateway.upstream_cookies', () => {
  let platform: PydanticPlatform;
  afterAll(() => platform.close());
  beforeAll(async () => {
    platform = await startPydanticPlatform();
  });

  /** The Cookie header the platform received for one request through a gateway with `setting`. */
  async function cookiesUnder(setting: unknown): Promise<string | undefined> {
    const stack = await startFaultyStack({
      gateway: { upstream: platform.url, ...(setting === undefined ? {} : { upstream_cookies: setting }) },
    });
    try {
      const browser = new Browserless();
      const session = await signInForSession(stack, browser);
      const from = platform.received.length;
      const answer = await fetch(`${stack.url}/v1/files`, {
        headers: { cookie: `gatehouse_session=${session}; platform_pref=dark; idp_sso=secret` },
      });
      expect(answer.status).toBe(200);
      return platform.received.slice(from)[0]!.headers.cookie;
    } finally {
      await stack.close();
    }
  }

  it('all (the default) passes every cookie but Gatehouse’s own', async () => {
    expect(await cookiesUnder(undefined)).toBe('platform_pref=dark; idp_sso=secret');
  });

  it('none passes no cookie at all, so a provider’s domain-wide SSO cookie never reaches the platform', async () => {
    expect(await cookiesUnder('none')).toBeUndefined();
  });

  it('a list passes only those cookies', async () => {
    expect(await cookiesUnder(['platform_pref', 'gatehouse_session'])).toBe('platform_pref=dark');
  });
});
