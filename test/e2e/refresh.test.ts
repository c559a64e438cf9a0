/**
 * Sessions that hold a refresh token are extended by refreshing before the ID token expires
 * (OpenID Connect Core 12); a refresh the provider refuses ends the session, one it cannot answer
 * does not until a grace period has passed, and concurrent requests refresh once.
 * https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokens
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { sha256 } from '../../src/crypto/tokens.js';
import { startSamplePlatform } from '../../src/demo/platform.js';
import { DEMO_USER, startDemoProvider } from '../../src/demo/provider.js';
import { openStorage, type DatabaseSettings, type Storage } from '../../src/storage/database.js';
import { Browserless } from '../support/browserless.js';
import type { TokenFault } from '../support/faulty-provider.js';
import { signInForSession } from '../support/sign-in.js';
import { freePort } from '../support/ports.js';
import {
  CLIENT_ID,
  CLIENT_SECRET,
  startFaultyStack,
  startGateway,
  testDatabase,
  type FaultyStack,
} from '../support/stack.js';

/** Short enough that the refresh window (the last 60 s of an ID token) is reached at once. */
const SHORT_TTL_SECONDS = 2;
/** Long enough that a refreshed ID token is outside the window for the rest of a test. */
const LONG_TTL_SECONDS = 300;

/** Settings the gateway and the test can both open: a file for SQLite, the test schema for PostgreSQL. */
function sharedDatabase(): DatabaseSettings {
  const database = testDatabase() as unknown as DatabaseSettings;
  if (database.url !== 'sqlite::memory:') return database;
  return { url: `sqlite:${join(mkdtempSync(join(tmpdir(), 'gatehouse-refresh-')), 'gatehouse.db')}` };
}

function sessionRow(storage: Storage, cookie: string) {
  return storage.db.selectFrom('sessions').selectAll().where('id_hash', '=', sha256(cookie)).executeTakeFirst();
}

async function statusOf(url: string, cookie: string): Promise<number> {
  const response = await fetch(`${url}/v1/auth/me`, { headers: { cookie: `gatehouse_session=${cookie}` } });
  await response.body?.cancel();
  return response.status;
}

/** The audit lines a gateway logged for sign-outs. */
function signOutReasons(logs: string[]): unknown[] {
  return logs
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.includes('"audit: sign_out"'))
    .map((line) => (JSON.parse(line) as { audit: { detail: { reason?: unknown } } }).audit.detail.reason);
}

describe('a session holding a refresh token', () => {
  const database = sharedDatabase();
  const keyHashSecret = randomBytes(32).toString('base64url');
  let stack: FaultyStack;
  let storage: Storage;

  beforeAll(async () => {
    stack = await startFaultyStack({ database, auth: { key_hash_secret: keyHashSecret } });
    storage = await openStorage(database);
  });
  afterAll(async () => {
    await storage.close();
    await stack.close();
  });
  beforeEach(() => {
    Object.assign(stack.provider, {
      fault: 'none',
      issueRefreshTokens: true,
      rotateRefreshTokens: true,
      idTokenLifetimeSeconds: SHORT_TTL_SECONDS,
      unreachable: false,
    });
  });
  afterEach(() => {
    vi.useRealTimers();
    stack.provider.unreachable = false;
  });

  const signedIn = () => signInForSession(stack, new Browserless());
  const status = (cookie: string) => statusOf(stack.url, cookie);
  const row = (cookie: string) => sessionRow(storage, cookie);

  it('is refreshed once when its ID token is about to expire, and continues with the new ID token', async () => {
    const cookie = await signedIn();
    const signInIdToken = stack.provider.lastIdToken;
    const before = await row(cookie);
    expect(before).toMatchObject({ id_token: signInIdToken, sid: stack.provider.lastSid, refresh_token_version: 0 });
    const refreshes = stack.provider.refreshRequests;
    stack.provider.idTokenLifetimeSeconds = LONG_TTL_SECONDS;

    expect(await status(cookie)).toBe(200);
    expect(stack.provider.refreshRequests - refreshes).toBe(1);
    const after = await row(cookie);
    expect(after?.id_token).toBe(stack.provider.lastIdToken);
    expect(after?.id_token).not.toBe(signInIdToken);
    expect(Number(after?.refresh_token_version)).toBe(1);
    expect(after?.refresh_token).not.toBe(before?.refresh_token);
    expect(Number(after?.id_token_expires_at)).toBeGreaterThan(Date.now() + (LONG_TTL_SECONDS - 60) * 1000);

    expect(await status(cookie)).toBe(200);
    expect(stack.provider.refreshRequests - refreshes).toBe(1);
  });

  it('is refreshed once for ten concurrent requests', async () => {
    const cookie = await signedIn();
    const refreshes = stack.provider.refreshRequests;
    stack.provider.idTokenLifetimeSeconds = LONG_TTL_SECONDS;

    const statuses = await Promise.all(Array.from({ length: 10 }, () => status(cookie)));
    expect(statuses).toEqual(Array(10).fill(200));
    expect(stack.provider.refreshRequests - refreshes).toBe(1);
  });

  it('redeems the rotated refresh token at the next refresh, never the one rotated away', async () => {
    const cookie = await signedIn();
    const refreshes = stack.provider.refreshRequests;
    // The provider revokes the whole grant when a rotated-away token comes back, so three
    // successful refreshes in a row prove each used the token the previous one returned.
    for (let round = 1; round <= 3; round++) {
      expect(await status(cookie)).toBe(200);
      expect(stack.provider.refreshRequests - refreshes).toBe(round);
    }
    expect(Number((await row(cookie))?.refresh_token_version)).toBe(3);
  });

  it('is refreshed once by two replicas sharing the database', async () => {
    const replica = await startGateway((website) => ({
      powerml: { website },
      auth_provider: {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        server_metadata_url: stack.provider.metadataUrl,
      },
      auth: { key_hash_secret: keyHashSecret },
      gateway: { upstream: stack.platform.url },
      database,
    }));
    try {
      const cookie = await signedIn();
      const refreshes = stack.provider.refreshRequests;
      stack.provider.idTokenLifetimeSeconds = LONG_TTL_SECONDS;

      const statuses = await Promise.all(
        Array.from({ length: 20 }, (_, index) => statusOf(index % 2 ? replica.url : stack.url, cookie)),
      );
      expect(statuses).toEqual(Array(20).fill(200));
      expect(stack.provider.refreshRequests - refreshes).toBe(1);
      expect(Number((await row(cookie))?.refresh_token_version)).toBe(1);
    } finally {
      await replica.close();
    }
  });

  it('ends when the provider refuses the refresh (the user was removed there)', async () => {
    const cookie = await signedIn();
    stack.provider.revokeRefreshTokens();
    await sleep(SHORT_TTL_SECONDS * 1000 + 100);
    const reasons = signOutReasons(stack.logs).length;

    expect(await status(cookie)).toBe(401);
    expect(await row(cookie)).toBeUndefined();
    expect(signOutReasons(stack.logs).slice(reasons)).toEqual(['refresh_failed']);
    expect(await status(cookie)).toBe(401);
  });

  const refusedFaults: TokenFault[] = ['other-subject', 'wrong-aud', 'wrong-iss', 'bad-signature', 'expired'];
  it.each(refusedFaults)('ends when the refreshed ID token has the fault %s', async (fault) => {
    const cookie = await signedIn();
    stack.provider.fault = fault;

    expect(await status(cookie)).toBe(401);
    expect(await row(cookie)).toBeUndefined();
  });

  it('continues within the grace while the provider is unreachable, and refreshes once it is back', async () => {
    const cookie = await signedIn();
    const refreshes = stack.provider.refreshRequests;
    stack.provider.unreachable = true;

    expect(await status(cookie)).toBe(200);
    expect(await status(cookie)).toBe(200);
    expect(await row(cookie)).toMatchObject({ refresh_token_version: 0 });

    // Past the ID token's expiry, within the grace, and past the pause after a failed attempt.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 60_000);
    expect(await status(cookie)).toBe(200);
    expect(await row(cookie)).toMatchObject({ refresh_token_version: 0 });

    stack.provider.unreachable = false;
    vi.setSystemTime(Date.now() + 31_000);
    expect(await status(cookie)).toBe(200);
    expect(stack.provider.refreshRequests - refreshes).toBe(1);
    expect(Number((await row(cookie))?.refresh_token_version)).toBe(1);
  });

  it('ends once its ID token is past the grace and the provider is still unreachable', async () => {
    const cookie = await signedIn();
    const reasons = signOutReasons(stack.logs).length;
    stack.provider.unreachable = true;
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 6 * 60_000);

    expect(await status(cookie)).toBe(401);
    expect(await row(cookie)).toBeUndefined();
    expect(signOutReasons(stack.logs).slice(reasons)).toEqual(['refresh_unavailable']);
  });

  it('without a refresh token, outlives its ID token and is never refreshed', async () => {
    stack.provider.issueRefreshTokens = false;
    const cookie = await signedIn();
    const refreshes = stack.provider.refreshRequests;
    expect(await row(cookie)).toMatchObject({ refresh_token: null });

    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 30 * 60_000);
    expect(await status(cookie)).toBe(200);
    expect(stack.provider.refreshRequests).toBe(refreshes);
  });
});

describe('refresh tokens at rest and in the log', () => {
  it('are stored sealed, never in plaintext, and never logged', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'gatehouse-refresh-at-rest-')), 'gatehouse.db');
    const stack = await startFaultyStack({ database: { url: `sqlite:${path}` } });
    let closed = false;
    try {
      Object.assign(stack.provider, { issueRefreshTokens: true, idTokenLifetimeSeconds: SHORT_TTL_SECONDS });
      const cookie = await signInForSession(stack, new Browserless());
      const issued = [stack.provider.lastRefreshToken!];
      expect(await statusOf(stack.url, cookie)).toBe(200);
      issued.push(stack.provider.lastRefreshToken!);
      expect(new Set(issued).size).toBe(2);

      const storage = await openStorage(`sqlite:${path}`);
      const stored = await sessionRow(storage, cookie);
      await storage.close();
      expect(stored?.refresh_token).toMatch(/^v1\.[\w-]+$/);

      await stack.close();
      closed = true;
      const files = [path, `${path}-wal`, `${path}-shm`].filter((file) => existsSync(file));
      const bytes = Buffer.concat(files.map((file) => readFileSync(file)));
      const log = stack.logs.join('');
      for (const token of issued) {
        expect(bytes.includes(token)).toBe(false);
        expect(bytes.includes(token.slice(0, 16))).toBe(false);
        expect(log).not.toContain(token);
        expect(log).not.toContain(token.slice(0, 16));
      }
    } finally {
      if (!closed) await stack.close();
    }
  });
});

/**
 * The same against oidc-provider, the certified implementation the demo provider wraps: its refresh
 * responses and its refusal once the account is gone are what a production provider sends.
 */
describe('against oidc-provider (the demo provider)', () => {
  /** Login page -> form post -> consent (granted by the demo) -> callback, as a browser would. */
  async function signInAtDemo(url: string): Promise<string> {
    const browser = new Browserless();
    const { response: page, visited } = await browser.follow(`${url}/v1/auth/login`);
    expect(page.status).toBe(200);
    await page.body?.cancel();
    const interaction = visited.at(-1)!;
    expect(interaction).toMatch(/\/interaction\/[\w-]+$/);
    const login = await browser.fetch(`${interaction}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ email: DEMO_USER.email, password: DEMO_USER.password }),
    });
    expect(login.status).toBeGreaterThanOrEqual(300);
    await browser.follow(new URL(login.headers.get('location')!, interaction).href);
    const cookie = browser.cookie(url, 'gatehouse_session');
    expect(cookie).toBeDefined();
    return cookie!;
  }

  it('refreshes the session, and ends it once the account is removed at the provider', async () => {
    const port = await freePort();
    const website = `http://127.0.0.1:${port}`;
    const database = sharedDatabase();
    const platform = await startSamplePlatform({ chunkDelayMs: 1 });
    const users = [{ ...DEMO_USER }];
    const provider = await startDemoProvider({
      users,
      idTokenTtlSeconds: SHORT_TTL_SECONDS,
      clients: [
        {
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          redirect_uris: [`${website}/v1/auth/auth`],
          post_logout_redirect_uris: [website],
        },
      ],
    });
    const gateway = await startGateway(
      (site) => ({
        powerml: { website: site },
        auth_provider: {
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          server_metadata_url: provider.metadataUrl,
        },
        gateway: { upstream: platform.url },
        database,
      }),
      port,
    );
    const storage = await openStorage(database);
    try {
      const cookie = await signInAtDemo(gateway.url);
      const signedIn = await sessionRow(storage, cookie);
      expect(signedIn?.refresh_token).toMatch(/^v1\./);

      expect(await statusOf(gateway.url, cookie)).toBe(200);
      const refreshed = await sessionRow(storage, cookie);
      // The browser's landing page after sign-in may have refreshed already; this request does again.
      expect(Number(refreshed?.refresh_token_version)).toBe(Number(signedIn?.refresh_token_version) + 1);
      // Within the same second oidc-provider may sign the very same ID token again (RS256 is deterministic).
      expect(Number(refreshed?.id_token_expires_at)).toBeGreaterThanOrEqual(Number(signedIn?.id_token_expires_at));

      users.splice(0, users.length);
      expect(await statusOf(gateway.url, cookie)).toBe(401);
      expect(await sessionRow(storage, cookie)).toBeUndefined();
      expect(signOutReasons(gateway.logs)).toEqual(['refresh_failed']);
    } finally {
      await storage.close();
      await gateway.close();
      await Promise.all([provider.close(), platform.close()]);
    }
  });
});
