/**
 * `gatehouse doctor` checks what an operator must get right before the first sign-in: one line per
 * dependency, PASS or FAIL, and under each FAIL a `fix:` line saying what to change. It exits 1
 * when anything fails and never prints a secret from the configuration.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { startDemoProvider, type DemoProvider } from '../../src/demo/provider.js';
import { startFaultyProvider, type FaultyProvider } from '../support/faulty-provider.js';
import { freePort } from '../support/ports.js';
import { CLIENT_ID, CLIENT_SECRET, deepMerge } from '../support/stack.js';
import { gatehouseArgs } from '../support/cli.js';

const run = promisify(execFile);
const CLI = gatehouseArgs();
const WEBSITE = 'http://127.0.0.1:5999';
const UPSTREAM_KEY = 'sk-doctor-upstream-3c9d1e7f';
const HASH_SECRET = 'doctor-hash-secret-0123456789abcdef0123';
const TEST_TOKEN = 'doctor-test-token-5e6f7a8b9c';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

interface Line {
  verdict: 'PASS' | 'FAIL';
  check: string;
  detail: string;
  fix?: string;
}

let dir: string;
let provider: FaultyProvider;
let platform: SamplePlatform;
let migratedDatabase: string;
let configCount = 0;

async function gatehouse(args: string[]): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...CLI, ...args]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** A healthy configuration with `changes` merged over it, written to a file of its own. */
function configFile(changes: Record<string, unknown> = {}): string {
  const healthy = {
    powerml: { website: WEBSITE },
    auth: { key_hash_secret: HASH_SECRET, test_token: TEST_TOKEN, test_token_email: 'robot@example.test' },
    auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: provider.metadataUrl },
    gateway: { upstream: platform.url, upstream_api_key: UPSTREAM_KEY, data_dir: join(dir, 'data') },
    database: { url: `sqlite:${migratedDatabase}` },
  };
  const file = join(dir, `edits-${++configCount}.yaml`);
  // JSON is YAML, and spares a serializer.
  writeFileSync(file, JSON.stringify(deepMerge(healthy, changes)));
  return file;
}

async function doctor(changes: Record<string, unknown> = {}): Promise<Result & { lines: Line[] }> {
  const result = await gatehouse(['doctor', '--config', configFile(changes)]);
  return { ...result, lines: parseReport(result.stdout) };
}

/** `PASS  name  detail` lines, each FAIL followed by an indented `fix: ...` line. */
function parseReport(stdout: string): Line[] {
  const lines: Line[] = [];
  for (const text of stdout.split('\n').filter((line) => line.trim() !== '')) {
    const fix = /^\s+fix: (.+)$/.exec(text);
    if (fix) {
      expect(lines.at(-1), `a fix line follows a check line: ${text}`).toBeDefined();
      lines.at(-1)!.fix = fix[1];
      continue;
    }
    const check = /^(PASS|FAIL) {2}(provider|client secret|redirect URI|platform|database|redis)\s+(.*)$/.exec(text);
    expect(check, `an unexpected line in the report: ${JSON.stringify(text)}`).not.toBeNull();
    lines.push({ verdict: check![1] as Line['verdict'], check: check![2]!, detail: check![3]! });
  }
  return lines;
}

function lineFor(lines: Line[], check: string): Line {
  const line = lines.find((candidate) => candidate.check === check);
  expect(line, `a ${check} line`).toBeDefined();
  return line!;
}

function expectNoSecrets(result: Result, extra: string[] = []): void {
  const output = result.stdout + result.stderr;
  for (const secret of [CLIENT_SECRET, UPSTREAM_KEY, HASH_SECRET, TEST_TOKEN, ...extra]) {
    expect(output.includes(secret), `output contains ${secret.slice(0, 6)}…`).toBe(false);
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-doctor-'));
  [provider, platform] = await Promise.all([
    startFaultyProvider({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUri: `${WEBSITE}/v1/auth/auth` }),
    startSamplePlatform(),
  ]);
  migratedDatabase = join(dir, 'migrated.db');
  const migrated = await gatehouse(['migrate', '--config', configFile()]);
  expect(migrated.code, migrated.stderr).toBe(0);
});

afterAll(async () => {
  await Promise.all([provider?.close(), platform?.close()]);
  rmSync(dir, { recursive: true, force: true });
});

describe('gatehouse doctor on a healthy setup', () => {
  it('prints PASS for the provider, client secret, redirect URI, platform and database, and exits 0', async () => {
    const before = platform.requests.length;
    const result = await doctor();
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.lines.map((line) => line.check)).toEqual([
      'provider',
      'client secret',
      'redirect URI',
      'platform',
      'database',
    ]);
    for (const line of result.lines) {
      expect(line.verdict, `${line.check}: ${line.detail}`).toBe('PASS');
      expect(line.fix).toBeUndefined();
    }
    expect(lineFor(result.lines, 'provider').detail).toContain(provider.issuer);
    expect(lineFor(result.lines, 'client secret').detail).toContain('refused as invalid_grant');
    expect(lineFor(result.lines, 'redirect URI').detail).toBe(
      `${WEBSITE}/v1/auth/auth accepted by the provider's authorization endpoint (302); register ${WEBSITE} as the post-logout URI`,
    );
    expect(lineFor(result.lines, 'platform').detail).toBe(
      `${platform.url}/v1/models answered 200, listing 2 models: demo-small, demo-large`,
    );
    expect(lineFor(result.lines, 'database').detail).toBe(`SQLite file ${migratedDatabase}, schema up to date`);
    expect(result.stderr).toBe('');
    expectNoSecrets(result);
    // The platform is asked as the gateway will ask it: with the upstream API key.
    const probe = platform.requests.slice(before).find((request) => request.url === '/v1/models');
    expect(probe?.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
  });
});

// Each case runs its own doctor process against its own broken copy of the configuration, one at a
// time: each process compiles the sources through tsx, and a dozen at once only queue for the CPU.
describe('gatehouse doctor on a broken setup', () => {
  it('fails the provider check when the provider is down, with a fix naming server_metadata_url', async () => {
    const down = `http://127.0.0.1:${await freePort()}/.well-known/openid-configuration`;
    const result = await doctor({ auth_provider: { server_metadata_url: down } });
    expect(result.code).toBe(1);
    const line = lineFor(result.lines, 'provider');
    expect(line.verdict).toBe('FAIL');
    expect(line.detail).toContain(down);
    expect(line.detail).toContain(`nothing listens at ${new URL(down).host} (ECONNREFUSED)`);
    expect(line.fix).toContain('auth_provider.server_metadata_url');
    expect(lineFor(result.lines, 'client secret').detail).toMatch(/^not checked/);
    expect(lineFor(result.lines, 'platform').verdict).toBe('PASS');
    expect(lineFor(result.lines, 'database').verdict).toBe('PASS');
    expectNoSecrets(result);
  });

  it('fails the platform check on a port where nothing listens, with a fix naming gateway.upstream', async () => {
    const wrongPort = `http://127.0.0.1:${await freePort()}`;
    const result = await doctor({ gateway: { upstream: wrongPort } });
    expect(result.code).toBe(1);
    const line = lineFor(result.lines, 'platform');
    expect(line.verdict).toBe('FAIL');
    expect(line.detail).toBe(`${wrongPort}/v1/models: nothing listens at ${new URL(wrongPort).host} (ECONNREFUSED)`);
    expect(line.fix).toContain('gateway.upstream');
    expect(lineFor(result.lines, 'provider').verdict).toBe('PASS');
    expectNoSecrets(result);
  });

  it('passes pending migrations when serve applies them (auto_migrate), and applies none itself', async () => {
    const empty = join(dir, 'empty.db');
    writeFileSync(empty, '');
    const result = await doctor({ database: { url: `sqlite:${empty}`, auto_migrate: true } });
    const line = lineFor(result.lines, 'database');
    expect(line.verdict, line.detail).toBe('PASS');
    expect(line.detail).toMatch(/^SQLite file .*, \d+ migrations pending \(001_[^)]*\): serve applies them at start/);
    expect(statSync(empty).size).toBe(0);
  });

  it('fails pending migrations when auto_migrate is off, with a fix saying to run gatehouse migrate', async () => {
    const empty = join(dir, 'empty-manual.db');
    writeFileSync(empty, '');
    const result = await doctor({ database: { url: `sqlite:${empty}`, auto_migrate: false } });
    expect(result.code).toBe(1);
    expect(lineFor(result.lines, 'database').verdict).toBe('FAIL');
    expect(lineFor(result.lines, 'database').fix).toContain('gatehouse migrate');
  });

  it('creates nothing: a database file that does not exist yet stays absent, and so does the data directory', async () => {
    const fresh = join(dir, 'fresh');
    const result = await doctor({
      database: { url: `sqlite:${join(fresh, 'gatehouse.db')}` },
      gateway: { data_dir: join(fresh, 'data') },
      auth: { key_hash_secret: null },
    });
    const line = lineFor(result.lines, 'database');
    expect(line.verdict, line.detail).toBe('PASS');
    expect(line.detail).toContain('does not exist yet: serve creates it and applies the migrations');
    expect(existsSync(fresh)).toBe(false);
  });

  it('fails the platform check when the model list answers 404, with a fix about the root URL', async () => {
    const result = await doctor({ gateway: { upstream: `${platform.url}/not-the-root` } });
    expect(result.code).toBe(1);
    const line = lineFor(result.lines, 'platform');
    expect(line.verdict).toBe('FAIL');
    expect(line.detail).toBe(`${platform.url}/not-the-root/v1/models answered 404: no model list there`);
    expect(line.fix).toContain('gateway.upstream must be the root URL');
  });

  it('fails the client secret check when the token endpoint rejects the credentials', async () => {
    const result = await doctor({ auth_provider: { client_secret: 'not-the-registered-secret' } });
    expect(result.code).toBe(1);
    const line = lineFor(result.lines, 'client secret');
    expect(line.verdict).toBe('FAIL');
    expect(line.detail).toContain(`client ${CLIENT_ID} rejected by ${provider.issuer}`);
    expect(line.detail).toContain('invalid_client');
    expect(line.fix).toContain('auth_provider.client_secret');
    expectNoSecrets(result, ['not-the-registered-secret']);
  });

  it('fails the redirect URI check when the provider does not know it, with the URI to register', async () => {
    const result = await doctor({ powerml: { website: 'http://127.0.0.1:5998' } });
    expect(result.code).toBe(1);
    const line = lineFor(result.lines, 'redirect URI');
    expect(line.verdict).toBe('FAIL');
    expect(line.detail).toContain(
      "http://127.0.0.1:5998/v1/auth/auth: the provider's authorization endpoint answered 400",
    );
    expect(line.fix).toBe(
      `register http://127.0.0.1:5998/v1/auth/auth as a redirect URI of client ${CLIENT_ID} at the provider`,
    );
  });

  it('fails the redirect URI check for an http website outside loopback, with a fix', async () => {
    const result = await doctor({
      powerml: { website: 'http://llm.example.com' },
      auth_provider: { allow_insecure_http: true },
    });
    expect(result.code).toBe(1);
    const line = lineFor(result.lines, 'redirect URI');
    expect(line.verdict).toBe('FAIL');
    expect(line.detail).toBe('http://llm.example.com/v1/auth/auth');
    expect(line.fix).toMatch(/https/);
  });

  it('reports every failure at once, each with its fix, and prints no other lines', async () => {
    const empty = join(dir, 'empty-too.db');
    writeFileSync(empty, '');
    const result = await doctor({
      auth_provider: { server_metadata_url: `http://127.0.0.1:${await freePort()}/.well-known/openid-configuration` },
      gateway: { upstream: `http://127.0.0.1:${await freePort()}` },
      database: { url: `sqlite:${empty}`, auto_migrate: false },
    });
    expect(result.code).toBe(1);
    expect(result.lines.filter((line) => line.verdict === 'FAIL').map((line) => line.check)).toEqual([
      'provider',
      'client secret',
      'redirect URI',
      'platform',
      'database',
    ]);
    for (const line of result.lines) {
      if (line.verdict === 'FAIL') expect(line.fix, line.check).toMatch(/\S{3,}/);
    }
    expectNoSecrets(result);
  });

  it('never prints the PostgreSQL or Redis password when they cannot be reached', async () => {
    const postgresPassword = 'pg-doctor-password-71c4';
    const redisPassword = 'redis-doctor-password-0d2a';
    const result = await doctor({
      database: { url: `postgres://gatehouse:${postgresPassword}@127.0.0.1:${await freePort()}/gatehouse` },
      redis: { url: `redis://:${redisPassword}@127.0.0.1:${await freePort()}` },
    });
    expect(result.code).toBe(1);
    expect(lineFor(result.lines, 'database').verdict).toBe('FAIL');
    expect(lineFor(result.lines, 'redis').verdict).toBe('FAIL');
    expect(lineFor(result.lines, 'redis').detail).toMatch(
      /^Redis: nothing listens at 127\.0\.0\.1:\d+ \(ECONNREFUSED\)$/,
    );
    expect(lineFor(result.lines, 'redis').fix).toContain('redis.url');
    expect(lineFor(result.lines, 'database').detail).toMatch(/^PostgreSQL: nothing listens at 127\.0\.0\.1:\d+/);
    expectNoSecrets(result, [postgresPassword, redisPassword]);
  });
});

describe('gatehouse doctor against a platform that refuses the upstream key', () => {
  let refusing: Server;
  beforeAll(async () => {
    refusing = createServer((request, response) => {
      const status = request.headers.authorization === `Bearer ${UPSTREAM_KEY}` ? 200 : 401;
      response.writeHead(status, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve));
  });
  afterAll(() => new Promise<void>((resolve) => refusing.close(() => resolve())));

  it('fails the platform check when the platform answers 401, with a fix naming gateway.upstream_api_key', async () => {
    const upstream = `http://127.0.0.1:${(refusing.address() as AddressInfo).port}`;
    const accepted = await doctor({ gateway: { upstream } });
    expect(lineFor(accepted.lines, 'platform').verdict).toBe('PASS');
    // Every user's request would be refused by the platform: the gateway is not ready to serve.
    const refused = await doctor({ gateway: { upstream, upstream_api_key: 'sk-not-the-platforms-key' } });
    expect(refused.code).toBe(1);
    const line = lineFor(refused.lines, 'platform');
    expect(line.verdict).toBe('FAIL');
    expect(line.detail).toContain('401');
    expect(line.fix).toContain('gateway.upstream_api_key');
    expectNoSecrets(refused, ['sk-not-the-platforms-key']);
  });
});

describe('gatehouse doctor against a provider that takes the client secret only in the form', () => {
  let postOnly: FaultyProvider;
  beforeAll(async () => {
    // Advertises both methods but refuses Basic: as a provider that does not decode form-encoded Basic credentials.
    postOnly = await startFaultyProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUri: `${WEBSITE}/v1/auth/auth`,
      acceptedClientAuth: ['post'],
    });
  });
  afterAll(() => postOnly.close());

  it('passes with client_secret_post as the gateway would sign in, and fails pinned to basic with the fix', async () => {
    const unpinned = await doctor({ auth_provider: { server_metadata_url: postOnly.metadataUrl } });
    const chosen = lineFor(unpinned.lines, 'client secret');
    expect(chosen.verdict).toBe('PASS');
    expect(chosen.detail).toContain('client_secret_post');
    const rejected = await doctor({
      auth_provider: { server_metadata_url: postOnly.metadataUrl, token_endpoint_auth_method: 'client_secret_basic' },
    });
    expect(rejected.code).toBe(1);
    const line = lineFor(rejected.lines, 'client secret');
    expect(line.verdict).toBe('FAIL');
    expect(line.fix).toContain('auth_provider.token_endpoint_auth_method: client_secret_post');
    const accepted = await doctor({
      auth_provider: { server_metadata_url: postOnly.metadataUrl, token_endpoint_auth_method: 'client_secret_post' },
    });
    expect(lineFor(accepted.lines, 'client secret').verdict).toBe('PASS');
  });
});

describe('gatehouse doctor against oidc-provider (the demo provider)', () => {
  let real: DemoProvider;
  beforeAll(async () => {
    real = await startDemoProvider({
      clients: [
        {
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          redirect_uris: [`${WEBSITE}/v1/auth/auth`],
          post_logout_redirect_uris: [WEBSITE],
        },
      ],
    });
  });
  afterAll(() => real.close());

  it('passes the client secret and redirect URI, and tells a wrong secret and an unregistered URI apart', async () => {
    const healthy = await doctor({ auth_provider: { server_metadata_url: real.metadataUrl } });
    expect(lineFor(healthy.lines, 'client secret').detail).toContain('refused as invalid_grant');
    expect(lineFor(healthy.lines, 'client secret').verdict).toBe('PASS');
    expect(lineFor(healthy.lines, 'redirect URI').verdict).toBe('PASS');
    const broken = await doctor({
      powerml: { website: 'http://127.0.0.1:5998' },
      auth_provider: { server_metadata_url: real.metadataUrl, client_secret: 'a-wrong-secret-for-the-demo' },
    });
    expect(lineFor(broken.lines, 'client secret').verdict).toBe('FAIL');
    expect(lineFor(broken.lines, 'client secret').detail).toContain('invalid_client');
    expect(lineFor(broken.lines, 'redirect URI').verdict).toBe('FAIL');
    expectNoSecrets(broken, ['a-wrong-secret-for-the-demo']);
  });
});

describe('gatehouse doctor against a provider that redirects an unknown redirect URI to its error page', () => {
  let errorPages: Server;
  let issuer: string;
  beforeAll(async () => {
    // As Auth0 does: no 400, but a redirect to a page of its own carrying the error.
    errorPages = createServer((request, response) => {
      const path = request.url?.split('?')[0];
      if (path === '/.well-known/openid-configuration') {
        response.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            issuer,
            authorization_endpoint: `${issuer}/authorize`,
            token_endpoint: `${issuer}/token`,
            jwks_uri: `${issuer}/jwks`,
            response_types_supported: ['code'],
          }),
        );
      } else if (path === '/authorize') {
        response
          .writeHead(302, { location: '/error?error=invalid_request&error_description=Callback+URL+mismatch' })
          .end();
      } else {
        response.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_grant"}');
      }
    });
    await new Promise<void>((resolve) => errorPages.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(errorPages.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => errorPages.close(() => resolve())));

  it('fails the redirect URI check, naming the error the page carries', async () => {
    const result = await doctor({
      auth_provider: { server_metadata_url: `${issuer}/.well-known/openid-configuration` },
    });
    const line = lineFor(result.lines, 'redirect URI');
    expect(line.verdict).toBe('FAIL');
    expect(line.detail).toContain('answered 302 (error=invalid_request)');
    expect(line.fix).toContain(`register ${WEBSITE}/v1/auth/auth as a redirect URI`);
    expect(lineFor(result.lines, 'client secret').verdict).toBe('PASS');
  });
});
