/**
 * Random and hostile input at every edge where the outside world reaches Gatehouse: the
 * configuration, `return_to`, the Authorization header, the session cookie, the sign-in callback,
 * JSON bodies, oversized requests and clients that send their headers a byte a second. Whatever
 * arrives, the answer is a 4xx a client can read (JSON for programs, a page for browsers), never a
 * 5xx, and the gateway keeps serving. Properties run at most 200 times each.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFromObject } from '../../src/config/index.js';
import { OWNED_SECTIONS } from '../../src/config/tree.js';
import { defaultsFilePath } from '../../src/config/yaml.js';
import { ConfigError } from '../../src/errors.js';
import { GATEWAY_BODY_LIMIT } from '../../src/http/body-parsers.js';
import { safeReturnTo } from '../../src/oidc/return-to.js';
import { Browserless } from '../support/browserless.js';
import { rawExchange, type RawAnswer } from '../support/raw-http.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';

/** Valid edits with auth on; every config property starts from these. */
const MINIMAL = {
  powerml: { website: 'https://llm.example.com' },
  auth_provider: {
    client_id: 'gatehouse',
    client_secret: 'client-secret-for-fuzzing',
    server_metadata_url: 'https://id.example.com/.well-known/openid-configuration',
  },
  gateway: { upstream: 'http://127.0.0.1:8000' },
};
const SECRET_KEYS = [
  'auth_provider.client_secret',
  'gateway.upstream_api_key',
  'auth.key_hash_secret',
  'auth.test_token',
];
const HOSTILE_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '', ' ', 'port ', 'PORT'];
const DEFAULT_KEYS = parse(readFileSync(defaultsFilePath(), 'utf8')) as Record<string, Record<string, unknown>>;
const SECTION_NAMES = OWNED_SECTIONS.join('|');
/** A problem line of a ConfigError begins with the key it is about: `gateway.port must be ...`. */
const NAMES_A_KEY = new RegExp(`^(${SECTION_NAMES})(\\.|\\b)`);

const BOTH_SLASHES = /^\/(?![/\\])/;
const PLACE = 'https://gateway.example';
// Control characters are exactly what must never come back.
// eslint-disable-next-line no-control-regex
const CONTROL_OR_SPACE = /[\u0000-\u0020\u007f]/;

function configProblems(edits: unknown): string[] | undefined {
  try {
    loadConfigFromObject(edits, 'fuzz.yaml', {});
    return undefined;
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message.startsWith('fuzz.yaml: invalid configuration\n  - ')).toBe(true);
    return message.split('\n  - ').slice(1);
  }
}

/** Edits whose owned sections hold arbitrary JSON, hostile key names included. */
const arbitraryEdits = fc
  .array(
    fc.tuple(
      fc.constantFrom(...OWNED_SECTIONS, 'platform_section'),
      fc.oneof(
        fc.jsonValue({ maxDepth: 3 }),
        fc
          .array(fc.tuple(fc.oneof(fc.constantFrom(...HOSTILE_KEYS), fc.string()), fc.jsonValue({ maxDepth: 2 })), {
            maxLength: 4,
          })
          .map((entries) => Object.fromEntries(entries)),
      ),
    ),
    { maxLength: 6 },
  )
  .map((entries) => Object.fromEntries(entries));

/** The sections whose defaults are mappings of keys (auth_providers is a list, off by default). */
const KEYED_SECTIONS = OWNED_SECTIONS.filter((section) => Object.keys(DEFAULT_KEYS[section] ?? {}).length > 0);

/** MINIMAL with one key, known or not, set to an arbitrary JSON value. */
const oneKeyChanged = fc.constantFrom(...KEYED_SECTIONS).chain((section) =>
  fc.record({
    section: fc.constant(section),
    key: fc.oneof(fc.constantFrom(...Object.keys(DEFAULT_KEYS[section] ?? {})), fc.constantFrom(...HOSTILE_KEYS)),
    value: fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.string().map((text) => `\${${text}}`),
    ),
  }),
);

describe('the config loader with arbitrary values', () => {
  it('returns a Config or throws a ConfigError whose every problem names a key, never anything else', () => {
    fc.assert(
      fc.property(arbitraryEdits, (edits) => {
        for (const problem of configProblems(edits) ?? []) expect(problem).toMatch(NAMES_A_KEY);
      }),
      { numRuns: 200 },
    );
  });

  it('names the changed key when one value of a valid file is replaced by anything', () => {
    fc.assert(
      fc.property(oneKeyChanged, ({ section, key, value }) => {
        const edits = JSON.parse(JSON.stringify(MINIMAL)) as Record<string, Record<string, unknown>>;
        edits[section] = Object.assign(edits[section] ?? {}, Object.fromEntries([[key, value]]));
        const problems = configProblems(edits);
        if (!problems) return;
        for (const problem of problems) expect(problem).toMatch(NAMES_A_KEY);
        // Another key may be named as a consequence (test_token needs test_token_email), but
        // never only others when this one is wrong in itself.
        expect(problems.join('\n')).toContain(`${section}.`);
      }),
      { numRuns: 200 },
    );
  });

  it('never echoes a secret value in its message', () => {
    const secretValue = fc.string({ minLength: 6, maxLength: 40 }).map((text) => `S3cr3t-${text}`);
    fc.assert(
      fc.property(fc.constantFrom(...SECRET_KEYS), secretValue, (path, secret) => {
        const [section, key] = path.split('.') as [string, string];
        const edits = JSON.parse(JSON.stringify(MINIMAL)) as Record<string, Record<string, unknown>>;
        edits[section] = { ...edits[section], [key]: secret };
        const problems = configProblems(edits) ?? [];
        expect(problems.join('\n')).not.toContain(secret);
      }),
      { numRuns: 200 },
    );
  });

  it('leaves Object.prototype alone whatever keys the edits use', () => {
    fc.assert(
      fc.property(arbitraryEdits, (edits) => {
        configProblems(JSON.parse(JSON.stringify(edits).replaceAll('"constructor"', '"__proto__"')));
        expect(Object.keys(Object.prototype)).toEqual([]);
        expect(({} as Record<string, unknown>).upstream).toBeUndefined();
      }),
      { numRuns: 100 },
    );
  });
});

/** Pieces browsers and URL parsers treat specially, to be strung together at random. */
const URL_PIECES = [
  '/',
  '//',
  '\\',
  '/\\',
  '%2F',
  '%2f',
  '%5C',
  '%252F',
  '.',
  '..',
  '%2e',
  '%2E%2E',
  '@',
  ':',
  'evil.example',
  'https:',
  'javascript:alert(1)',
  '\t',
  '\n',
  '\r',
  '\u0000',
  '%00',
  '%09',
  '%0a',
  ' ',
  '\u3000',
  '\uff0f',
  '\u2215',
  '?',
  '#',
  '&',
  'a',
  'v1',
];
const returnToCandidates = fc.oneof(
  fc.array(fc.constantFrom(...URL_PIECES), { maxLength: 10 }).map((pieces) => pieces.join('')),
  fc.array(fc.constantFrom(...URL_PIECES), { maxLength: 6 }).map((pieces) => `/${pieces.join('')}`),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.webUrl(),
  fc.webPath(),
);

describe('safeReturnTo with arbitrary strings', () => {
  it('returns a path that starts with exactly one slash and stays on the same origin', () => {
    fc.assert(
      fc.property(returnToCandidates, (candidate) => {
        const path = safeReturnTo(candidate);
        expect(path).toMatch(BOTH_SLASHES);
        expect(path).not.toMatch(CONTROL_OR_SPACE);
        // A browser resolves the Location header against the page it is on.
        expect(new URL(path, PLACE).origin).toBe(PLACE);
        expect(new URL(path, `${PLACE}/deep/page?x=1`).origin).toBe(PLACE);
      }),
      { numRuns: 200 },
    );
  });

  it('keeps a path it has accepted (a second pass changes nothing)', () => {
    fc.assert(
      fc.property(returnToCandidates, (candidate) => {
        const path = safeReturnTo(candidate);
        expect(safeReturnTo(path)).toBe(path);
      }),
      { numRuns: 200 },
    );
  });
});

function get(url: string, path: string, headerLines: Buffer[]): Promise<RawAnswer> {
  const host = new URL(url).host;
  return rawExchange(
    url,
    Buffer.concat([
      Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n`, 'latin1'),
      ...headerLines.flatMap((line) => [line, Buffer.from('\r\n')]),
      Buffer.from('\r\n'),
    ]),
  );
}

function expectJsonAnswer(answer: RawAnswer, statuses: number[]): void {
  expect(statuses, `${answer.status} ${answer.body.slice(0, 200)}`).toContain(answer.status);
  expect(answer.head).toMatch(/^content-type: application\/json/m);
  expect(() => JSON.parse(answer.body.split('\r\n0\r\n')[0]!)).not.toThrow();
}

/** Header value bytes that keep the header on its line: anything but CR and LF. */
const headerBytes = (maxLength: number) =>
  fc.uint8Array({ maxLength }).map((bytes) => Buffer.from(bytes.filter((byte) => byte !== 0x0d && byte !== 0x0a)));

interface Slowloris {
  openedAt: number;
  /** Per connection, when the server closed it and what it answered (if anything). */
  closed: Array<Promise<{ at: number; answer: string }>>;
  stop(): void;
}

/**
 * Opens connections that send a request a byte a second, half from the request line, half from
 * the middle of a header, and never finish it.
 */
function openSlowloris(url: string, count: number): Slowloris {
  const { hostname, port } = new URL(url);
  const sockets: Socket[] = [];
  const timers: NodeJS.Timeout[] = [];
  const closed = Array.from({ length: count }, (_, index) => {
    const socket = connect(Number(port), hostname);
    sockets.push(socket);
    const script = `GET /v1/models HTTP/1.1\r\nHost: ${hostname}\r\nX-Padding: ${'z'.repeat(1_000)}`;
    let position = index % 2 === 0 ? 0 : script.length - 1_000;
    if (position > 0) socket.write(script.slice(0, position));
    timers.push(
      setInterval(() => {
        if (!socket.destroyed && position < script.length) socket.write(script[position++]!);
      }, 1_000),
    );
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    return new Promise<{ at: number; answer: string }>((resolve) =>
      socket.once('close', () => resolve({ at: Date.now(), answer })),
    );
  });
  return {
    openedAt: Date.now(),
    closed,
    stop() {
      for (const timer of timers) clearInterval(timer);
      for (const socket of sockets) socket.destroy();
    },
  };
}

describe('a gateway under hostile input, while 50 slowloris connections are held open', () => {
  let stack: FaultyStack;
  let browser: Browserless;
  let slowloris: Slowloris;

  beforeAll(async () => {
    // The failure limit is off so that refusals stay 401 rather than turning into 429.
    stack = await startFaultyStack({ auth: { failed_auth_per_minute: 0 } });
    slowloris = openSlowloris(stack.url, 50);
    browser = new Browserless();
    await signInForSession(stack, browser);
  });
  afterAll(async () => {
    slowloris?.stop();
    await stack?.close();
  });

  it('answers any Authorization value with 400 or 401 JSON and forwards nothing', async () => {
    const forwardedBefore = stack.platform.requests.length;
    const authorization = fc.oneof(
      headerBytes(300),
      fc.string({ unit: 'binary', maxLength: 200 }).map((text) => Buffer.from(`Bearer ${text}`, 'utf8')),
      fc.stringMatching(/^gth_[0-9A-Za-z]{36}$/).map((key) => Buffer.from(`Bearer ${key}`)),
      fc
        .tuple(fc.constantFrom('Bearer ', 'bearer  ', 'Basic ', 'Bearer gth_', ''), fc.string({ maxLength: 80 }))
        .map(([scheme, rest]) => Buffer.from(scheme + rest, 'latin1')),
    );
    await fc.assert(
      fc.asyncProperty(authorization, async (value) => {
        const answer = await get(stack.url, '/echo/fuzz', [Buffer.concat([Buffer.from('Authorization: '), value])]);
        expectJsonAnswer(answer, [400, 401]);
      }),
      { numRuns: 200, endOnFailure: true },
    );
    expect(stack.platform.requests.length).toBe(forwardedBefore);
  });

  it('answers an Authorization of 8 to 40 KB with 401 or 431 JSON, and keeps serving', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 8_000, max: 40_000 }),
        fc.constantFrom('a', 'é', '🔑', '%'),
        async (length, filler) => {
          const value = Buffer.from(`Bearer gth_${filler.repeat(Math.ceil(length / Buffer.byteLength(filler)))}`);
          const answer = await get(stack.url, '/echo/long', [Buffer.concat([Buffer.from('Authorization: '), value])]);
          expectJsonAnswer(answer, [400, 401, 431]);
        },
      ),
      { numRuns: 30, endOnFailure: true },
    );
    expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
  });

  it('treats any gatehouse_session value it did not issue as signed out', async () => {
    const forwardedBefore = stack.platform.requests.length;
    const session = browser.cookie(stack.url, 'gatehouse_session')!;
    const value = fc.oneof(
      headerBytes(200),
      fc.string({ unit: 'binary', maxLength: 100 }).map((text) => Buffer.from(text, 'utf8')),
      // Near misses of a real session: one character changed, cut short or extended.
      fc
        .tuple(fc.nat({ max: session.length - 1 }), fc.constantFrom('A', '0', '-', '_', '%', ''), fc.boolean())
        .filter(([at, replacement]) => session[at] !== replacement)
        .map(([at, replacement, extend]) =>
          Buffer.from(session.slice(0, at) + replacement + (extend ? session : session.slice(at + 1))),
        )
        // Position 0, nothing inserted, extended: that is the session itself, which must work.
        .filter((candidate) => candidate.toString() !== session),
    );
    await fc.assert(
      fc.asyncProperty(value, async (cookie) => {
        const line = Buffer.concat([Buffer.from('Cookie: gatehouse_session='), cookie]);
        const me = await get(stack.url, '/v1/auth/me', [line]);
        expectJsonAnswer(me, [400, 401]);
        if (me.status === 401) expect(JSON.parse(me.body).error.code).toBe('missing_credentials');
        const page = await get(stack.url, '/v1/models', [line, Buffer.from('Accept: text/html')]);
        expect([302, 400], String(page.status)).toContain(page.status);
        if (page.status === 302) expect(page.head).toMatch(/^location: \/v1\/auth\/login\?return_to=/m);
      }),
      { numRuns: 100, endOnFailure: true },
    );
    expect(stack.platform.requests.length).toBe(forwardedBefore);
  });

  const callbackParameter = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.string({ unit: 'binary', maxLength: 30 }),
    fc.constantFrom('<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', '%00', '\u202e', '..%2F'),
  );
  const callbackQuery = fc.record(
    {
      code: callbackParameter,
      state: callbackParameter,
      error: callbackParameter,
      iss: fc.oneof(callbackParameter, fc.webUrl()),
      error_description: callbackParameter,
    },
    { requiredKeys: [] },
  );

  function expectSignInPage(status: number, type: string | null, page: string): void {
    expect([400, 403], `${status}: ${page.slice(0, 400)}`).toContain(status);
    expect(type).toMatch(/^text\/html/);
    expect(page).not.toContain('<script>alert');
    expect(page).not.toContain('<img src=x');
  }

  it('answers any callback query without a sign-in in progress with a 400 or 403 page', async () => {
    await fc.assert(
      fc.asyncProperty(callbackQuery, async (query) => {
        const response = await fetch(`${stack.url}/v1/auth/auth?${new URLSearchParams(query)}`, {
          redirect: 'manual',
        });
        expectSignInPage(response.status, response.headers.get('content-type'), await response.text());
        expect(response.headers.getSetCookie().some((line) => line.startsWith('gatehouse_session='))).toBe(false);
      }),
      { numRuns: 200, endOnFailure: true },
    );
  });

  it('answers any callback query to a sign-in in progress with a 400 or 403 page, its own state or not', async () => {
    const withFlow = fc.record({ query: callbackQuery, keepState: fc.boolean(), dropCode: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(withFlow, async ({ query, keepState, dropCode }) => {
        const visitor = new Browserless();
        const login = await visitor.fetch(`${stack.url}/v1/auth/login`);
        const state = new URL(login.headers.get('location')!).searchParams.get('state')!;
        const parameters: Record<string, string> = { ...query, ...(keepState ? { state } : {}) };
        if (dropCode) delete parameters.code;
        const response = await visitor.fetch(`${stack.url}/v1/auth/auth?${new URLSearchParams(parameters)}`);
        expectSignInPage(response.status, response.headers.get('content-type'), await response.text());
        expect(visitor.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
      }),
      {
        numRuns: 60,
        endOnFailure: true,
        // Always tried: a forged code with the flow's own state reaches the token endpoint, which
        // answers invalid_grant; that is the visitor's problem, not a gateway failure.
        examples: [[{ query: { code: 'forged-code' }, keepState: true, dropCode: false }]],
      },
    );
  });

  it('answers any JSON body for POST /v1/auth/api-keys with 201 or 400 JSON', async () => {
    const field = fc.oneof(fc.string({ maxLength: 120 }), fc.jsonValue({ maxDepth: 2 }), fc.integer(), fc.double());
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value)),
      fc.string({ maxLength: 200 }),
      fc.record({ name: field, expires_in_days: field }, { requiredKeys: [] }).map((value) => JSON.stringify(value)),
      fc
        .tuple(fc.constantFrom(...HOSTILE_KEYS), fc.jsonValue({ maxDepth: 2 }))
        .map(([key, value]) => `{"name":"hostile",${JSON.stringify(key)}:${JSON.stringify(value)}}`),
    );
    await fc.assert(
      fc.asyncProperty(body, async (text) => {
        const response = await browser.fetch(`${stack.url}/v1/auth/api-keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin: stack.url },
          body: text,
        });
        const answer = await response.text();
        expect([201, 400], `${response.status} for ${text.slice(0, 200)}: ${answer.slice(0, 200)}`).toContain(
          response.status,
        );
        expect(response.headers.get('content-type')).toMatch(/^application\/json/);
        expect(() => JSON.parse(answer)).not.toThrow();
      }),
      { numRuns: 200, endOnFailure: true },
    );
    expect(Object.keys(Object.prototype)).toEqual([]);
  });

  it('answers request heads over 16 KB with 431 JSON and keeps serving', async () => {
    const oneHuge = await get(stack.url, '/v1/models', [Buffer.from(`X-Filler: ${'f'.repeat(20_000)}`)]);
    expectJsonAnswer(oneHuge, [431]);
    const many = Array.from({ length: 400 }, (_, index) => Buffer.from(`X-Filler-${index}: ${'f'.repeat(50)}`));
    expectJsonAnswer(await get(stack.url, '/v1/models', many), [431]);
    expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
  });

  it('answers a JSON body over the gateway’s body limit to /v1/auth/api-keys with 413 JSON, with or without Content-Length', async () => {
    const huge = JSON.stringify({ name: 'big', padding: 'p'.repeat(GATEWAY_BODY_LIMIT.bytes) });
    const init = { method: 'POST', headers: { 'content-type': 'application/json', origin: stack.url } };
    const sized = await browser.fetch(`${stack.url}/v1/auth/api-keys`, { ...init, body: huge });
    expect(sized.status).toBe(413);
    expect(sized.headers.get('content-type')).toMatch(/^application\/json/);
    expect(((await sized.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    const chunked = await browser.fetch(`${stack.url}/v1/auth/api-keys`, {
      ...init,
      body: new Blob([huge]).stream(),
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
    await chunked.body?.cancel();
    expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
  });

  it('closes the slowloris connections once the headers timeout passes, while serving everyone else', async () => {
    const { headersTimeout } = stack.gateway.app.server;
    expect(headersTimeout, 'http server headersTimeout (ms)').toBeGreaterThan(0);
    expect(headersTimeout, 'http server headersTimeout (ms)').toBeLessThanOrEqual(20_000);
    const deadline = slowloris.openedAt + headersTimeout + 3_000;
    const latencies: number[] = [];
    let closedCount = 0;
    for (const closing of slowloris.closed) void closing.then(() => (closedCount += 1));
    // At least one round, even when the tests before took the suite past the deadline (a loaded
    // machine): its awaits also let the closings already seen be counted.
    do {
      const started = Date.now();
      expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
      latencies.push(Date.now() - started);
      await sleep(250);
    } while (closedCount < slowloris.closed.length && Date.now() < deadline);
    expect(
      slowloris.closed.length - closedCount,
      `connections still open ${Date.now() - slowloris.openedAt} ms after they were opened`,
    ).toBe(0);
    for (const { at, answer } of await Promise.all(slowloris.closed)) {
      expect(at - slowloris.openedAt).toBeGreaterThanOrEqual(headersTimeout - 1_000);
      expect(answer).toMatch(/^(HTTP\/1\.1 408 |$)/);
    }
    // Math.max() of no latencies is -Infinity, which would pass any bound.
    expect(latencies.length, 'signed-in requests made while the connections were open').toBeGreaterThan(0);
    expect(Math.max(...latencies), 'slowest signed-in request meanwhile (ms)').toBeLessThan(1_000);
  }, 40_000);
});
