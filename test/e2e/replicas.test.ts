/**
 * Two gateway processes behind one (imagined) load balancer: they share a PostgreSQL schema, and in
 * the second run a Redis too. Whatever one replica learns (a sign-in, a new key, a revocation, a
 * disabled user) the other must honour at once, or within the one second Gatehouse promises.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { openStorage } from '../../src/storage/database.js';
import { Browserless } from '../support/browserless.js';
import {
  appliedNotices,
  listenForChanges,
  PROMISED_WITHIN_MS,
  type AppliedNotice,
  type ChangeChannels,
} from '../support/change-channels.js';
import { startFaultyProvider, type FaultyProvider } from '../support/faulty-provider.js';
import { freePort } from '../support/ports.js';
import { requirePostgres, requireRedis } from '../support/requirements.js';
import {
  deleteRedisKeys,
  dropSchema,
  holdRow,
  POSTGRES_URL,
  REDIS_URL,
  uniqueSchema,
  withPostgres,
} from '../support/services.js';
import { createKey } from '../support/keys.js';
import { signInForSession } from '../support/sign-in.js';
import { readEvents } from '../support/sse.js';
import { msUntil } from '../support/wait.js';
import { CLIENT_ID, CLIENT_SECRET } from '../support/stack.js';
import { spawnServe, waitUntilReady, type ServeProcess } from '../support/serve.js';

const postgres = await requirePostgres();
const redisAvailable = await requireRedis();

// Gatehouse promises that anything revoked on one replica is refused on every other within 1 s; the
// announcement makes it much sooner. Without it, a replica serves the answer it cached for a key or
// a session until that answer ages out. Timing alone cannot tell the two apart on a loaded machine,
// so each replica logs (at debug level) every notice it applies and the channel that brought it:
// the tests require the notice from every configured channel, no request sent after the notice was
// applied to be served, and the refusal within the promise, counted from a moment the change cannot
// precede. Cache expiry never cuts a stream, so there the promise itself is the bound.

const ADMIN = { subject: 'grace-1', email: 'grace@example.test' };
const MEMBER = { subject: 'ada-1', email: 'ada@example.test' };

function withKey(url: string, key: string, path = '/echo/replica'): Promise<Response> {
  return fetch(`${url}${path}`, { headers: { authorization: `Bearer ${key}` } });
}

async function codeOf(response: Response): Promise<string | undefined> {
  const text = await response.text();
  try {
    return (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

/** Measured propagation times, printed at the end so a run's numbers can be compared with others. */
const timings: string[] = [];
afterAll(() => {
  if (timings.length) console.info(`replica propagation:\n  ${timings.join('\n  ')}`);
});

const backends = [
  { backend: 'PostgreSQL only', useRedis: false },
  { backend: 'PostgreSQL + Redis', useRedis: true },
].filter(({ useRedis }) => !useRedis || redisAvailable);

describe.skipIf(!postgres).each(backends)('two replicas sharing $backend', ({ backend, useRedis }) => {
  const schema = uniqueSchema();
  const keyPrefix = `t${randomBytes(6).toString('hex')}:`;
  let dir: string;
  let platform: SamplePlatform;
  let provider: FaultyProvider;
  let a: ServeProcess;
  let b: ServeProcess;
  let admin: Browserless;
  let member: Browserless;
  /** The website both replicas name: a load balancer would give them this one origin. */
  let website: string;
  let channels: ChangeChannels;

  /**
   * Waits until `replica` has applied a notice of `kind` (sent at or after `since`) from each
   * channel it must hear it on: PostgreSQL's NOTIFY, and with Redis configured its pub/sub too, as
   * its own debug log records. Prints how long each took from `since`; resolves with the first.
   */
  async function expectApplied(replica: ServeProcess, kind: string, since: number, what: string): Promise<number> {
    const expected: Array<AppliedNotice['channel']> = useRedis ? ['postgres', 'redis'] : ['postgres'];
    const heardOn = () => new Set(appliedNotices(replica.stdout(), kind, since).map((notice) => notice.channel));
    await expect
      .poll(() => expected.filter((channel) => !heardOn().has(channel)), {
        message: `${kind} notices not applied`,
        timeout: 3 * PROMISED_WITHIN_MS,
      })
      .toEqual([]);
    const notices = appliedNotices(replica.stdout(), kind, since);
    const delays = notices.map((notice) => `${notice.channel} ${notice.at - since} ms`).join(', ');
    timings.push(`${backend}: ${what}, notice applied on the other replica after ${delays}`);
    for (const notice of notices)
      expect(notice.at - since, `${notice.channel} notice`).toBeLessThan(PROMISED_WITHIN_MS);
    return Math.min(...notices.map((notice) => notice.at));
  }

  async function signInAs(who: { subject: string; email: string }): Promise<Browserless> {
    provider.subject = who.subject;
    provider.email = who.email;
    const browser = new Browserless();
    await signInForSession(a, browser);
    return browser;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-replicas-'));
    const [portA, portB] = [await freePort(), await freePort()];
    website = `http://127.0.0.1:${portA}`;
    platform = await startSamplePlatform({ chunkDelayMs: 20 });
    provider = await startFaultyProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUri: `${website}/v1/auth/auth`,
    });
    const edits = (port: number) => ({
      powerml: { website },
      auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: provider.metadataUrl },
      auth: { admin_emails: [ADMIN.email] },
      // One data_dir: both replicas must hash keys with the same generated secret.
      gateway: { host: '127.0.0.1', port, upstream: platform.url, data_dir: join(dir, 'data') },
      database: { url: POSTGRES_URL, schema },
      ...(useRedis ? { redis: { url: REDIS_URL, key_prefix: keyPrefix } } : {}),
    });
    // At debug level each replica logs every change notice it applies, and from which channel.
    a = spawnServe({ dir, name: 'a', config: edits(portA), logLevel: 'debug' });
    b = spawnServe({ dir, name: 'b', config: edits(portB), logLevel: 'debug' });
    await Promise.all([waitUntilReady(a), waitUntilReady(b)]);
    channels = await listenForChanges(schema, useRedis ? keyPrefix : undefined);
    admin = await signInAs(ADMIN);
    member = await signInAs(MEMBER);
  });

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop(), channels?.close()]);
    await Promise.all([platform?.close(), provider?.close()]);
    await dropSchema(schema);
    if (useRedis) await deleteRedisKeys(keyPrefix);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('accepts on replica B a session started on replica A', async () => {
    const me = await member.fetch(`${b.url}/v1/auth/me`);
    expect(me.status).toBe(200);
    expect(((await me.json()) as { email: string }).email).toBe(MEMBER.email);
  });

  it('accepts on B an API key created on A', async () => {
    const created = await createKey(a, member, { name: 'made on A' });
    const response = await withKey(b.url, created.key);
    expect(response.status).toBe(200);
    const echo = (await response.json()) as { headers: Record<string, string> };
    expect(echo.headers['x-forwarded-email']).toBe(MEMBER.email);
  });

  it(`refuses on A, within ${PROMISED_WITHIN_MS} ms, a key revoked on B, from the moment A applies the notice`, async () => {
    const created = await createKey(a, member, { name: 'revoked on B' });
    expect((await withKey(b.url, created.key)).status).toBe(200);
    // B's revocation waits in PostgreSQL behind the test's lock on the key's row while A caches the
    // key: it commits after the release, however long a loaded B takes to get there.
    const row = await holdRow(schema, 'api_keys', created.id);
    const revoking = member.fetch(`${b.url}/v1/auth/api-keys/${created.id}`, {
      method: 'DELETE',
      headers: { origin: website },
    });
    // The revocation cannot commit before the test lets go of the row: from here on it may.
    let released = Infinity;
    try {
      await row.waitedOnBy('revoked_at');
      expect((await withKey(a.url, created.key)).status).toBe(200);
    } finally {
      released = Date.now();
      await row.release();
    }
    const served: number[] = [];
    const refusedAfter = await msUntil(async () => {
      const sent = Date.now();
      const response = await withKey(a.url, created.key);
      if (response.status === 200) served.push(sent);
      return response.status === 401 && (await codeOf(response)) === 'revoked_api_key';
    }, released);
    expect((await revoking).status).toBe(204);
    const applied = await expectApplied(a, 'keys_changed', released, 'revocation on B');
    timings.push(`${backend}: key revoked on B refused on A ${refusedAfter} ms after the row lock was let go`);
    // A request sent in the very millisecond the notice was applied may have been taken in before it.
    expect(
      served.filter((sent) => sent > applied),
      'A served the key after applying the notice of its revocation',
    ).toEqual([]);
    expect(refusedAfter).toBeLessThan(PROMISED_WITHIN_MS);
  });

  it.runIf(useRedis)('shares key lookups through Redis and bumps their version on a revocation', async () => {
    const created = await createKey(a, member, { name: 'shared through Redis' });
    expect((await withKey(a.url, created.key)).status).toBe(200);
    const redis = new Redis(REDIS_URL);
    try {
      const entryKeys = async () =>
        (await redis.keys(`${keyPrefix}key:*`)).filter((key) => !key.endsWith(':version')).length;
      const version = async () => Number(await redis.get(`${keyPrefix}key:version`));
      expect(await entryKeys()).toBeGreaterThan(0);
      const before = await version();
      const started = Date.now();
      const revoked = await member.fetch(`${a.url}/v1/auth/api-keys/${created.id}`, {
        method: 'DELETE',
        headers: { origin: website },
      });
      expect(revoked.status).toBe(204);
      expect(await version()).toBeGreaterThan(before);
      await expect.poll(() => channels.first('redis', 'keys_changed', started)).toBeDefined();
    } finally {
      redis.disconnect();
    }
  });

  it(`refuses on B, within ${PROMISED_WITHIN_MS} ms, a session ended on A, from the moment B applies the notice`, async () => {
    const browser = await signInAs(MEMBER);
    const cookie = `gatehouse_session=${browser.cookie(a.url, 'gatehouse_session')}`;
    const served: number[] = [];
    const meOnB = async () => {
      const sent = Date.now();
      const status = (await fetch(`${b.url}/v1/auth/me`, { headers: { cookie } })).status;
      if (status === 200) served.push(sent);
      return status;
    };
    // The session was started on A: this first request to B is the one that caches it there.
    expect(await meOnB()).toBe(200);
    const started = Date.now();
    const logout = await browser.fetch(`${a.url}/v1/auth/logout`);
    expect(logout.status).toBe(302);
    const refusedAfter = await msUntil(async () => (await meOnB()) === 401, started);
    const applied = await expectApplied(b, 'session_ended', started, 'sign-out on A');
    timings.push(`${backend}: session ended on A refused on B ${refusedAfter} ms after the sign-out was sent`);
    expect(
      served.filter((sent) => sent > applied),
      'B served the session after applying the notice of its end',
    ).toEqual([]);
    expect(refusedAfter).toBeLessThan(PROMISED_WITHIN_MS);
  });

  it(`cuts within ${PROMISED_WITHIN_MS} ms a stream on B of a user an admin disables on A`, async () => {
    const created = await createKey(a, member, { name: 'streams on B' });
    const users = await admin.fetch(`${a.url}/v1/auth/admin/users`);
    expect(users.status).toBe(200);
    const target = ((await users.json()) as { data: Array<{ id: string; email: string }> }).data.find(
      (user) => user.email === MEMBER.email,
    )!;
    expect(target).toBeDefined();

    const stream = await withKey(b.url, created.key, '/slow-stream?chunks=200&delayMs=50');
    expect(stream.status).toBe(200);
    const reading = readEvents(stream);
    await expect.poll(() => reading.events.length).toBeGreaterThan(0);

    const started = Date.now();
    const disabled = await admin.fetch(`${a.url}/v1/auth/admin/users/${target.id}/disable`, {
      method: 'POST',
      headers: { origin: website },
    });
    expect(disabled.status, await disabled.clone().text()).toBe(200);
    const stored = Date.now();
    // Waiting for the 10 s stream to run out would only make a failure slower to report.
    const giveUp = setTimeout(() => reading.giveUp(), 3 * PROMISED_WITHIN_MS);
    // The gateway may end the response or reset the connection; either is a cut.
    const ended = await reading.finished;
    clearTimeout(giveUp);
    // The stream may be cut before A's answer reaches the test: the change was stored before it.
    const elapsed = Math.max(0, ended.at - stored);
    const outcome = reading.gaveUp ? 'still open' : 'cut';
    timings.push(
      `${backend}: stream on B ${outcome} ${elapsed} ms after A answered the disable (bound ${PROMISED_WITHIN_MS} ms)`,
    );
    await expectApplied(b, 'user_disabled', started, 'disable on A');
    expect(reading.gaveUp, 'the stream on B was still open').toBe(false);
    expect(
      reading.events.some((event) => event.data === '[DONE]'),
      'the stream on B ran to its end',
    ).toBe(false);
    expect(elapsed).toBeLessThan(PROMISED_WITHIN_MS);

    const again = await withKey(b.url, created.key);
    expect(again.status).toBe(403);
    expect(await codeOf(again)).toBe('account_disabled');
    expect((await member.fetch(`${b.url}/v1/auth/me`)).status).toBe(401);
  });
});

describe.skipIf(!postgres)('replicas starting together on an empty schema', () => {
  const schemas: string[] = [];
  afterAll(async () => {
    for (const schema of schemas) await dropSchema(schema);
  });

  it('both come up, and the migrations ran once', async () => {
    const schema = uniqueSchema();
    schemas.push(schema);
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-replicas-'));
    const platform = await startSamplePlatform();
    const replicas: ServeProcess[] = [];
    try {
      const ports = [await freePort(), await freePort()];
      for (const [index, port] of ports.entries()) {
        replicas.push(
          spawnServe({
            dir,
            name: `r${index}`,
            config: {
              auth: { disable_auth: true },
              gateway: { host: '127.0.0.1', port, upstream: platform.url, data_dir: join(dir, 'data') },
              database: { url: POSTGRES_URL, schema },
            },
          }),
        );
      }
      await Promise.all(replicas.map((replica) => waitUntilReady(replica)));
      const migrations = await withPostgres(
        async (client) => (await client.query(`select name from "${schema}".gatehouse_migrations`)).rows,
      );
      const names = migrations.map((row: { name: string }) => row.name);
      expect(names.length).toBeGreaterThan(0);
      expect(new Set(names).size).toBe(names.length);
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()));
      await platform.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Two processes rarely start within the same few milliseconds; many openings at once make the
  // race on creating the schema certain instead of occasional.
  it('never fails when eight gateways open the same empty schema at once', async () => {
    const failures: string[] = [];
    for (let round = 0; round < 4; round++) {
      const schema = uniqueSchema();
      schemas.push(schema);
      const opened = await Promise.allSettled(
        Array.from({ length: 8 }, () => openStorage({ url: POSTGRES_URL, schema })),
      );
      for (const result of opened) {
        if (result.status === 'fulfilled') await result.value.close();
        else failures.push((result.reason as Error).message);
      }
    }
    expect(failures).toEqual([]);
    // Four rounds of eight openings, each migrating: on a loaded machine a round alone can take 10 s.
  }, 120_000);
});
