/**
 * PostgreSQL or Redis going away under steady traffic, simulated by a TCP relay between the
 * gateway and the shared service. PostgreSQL is the source of truth: while it is away a lookup that
 * cannot be made is a refusal (503 naming it), never a pass, never a 401 and never a 500. Redis only
 * speeds things up: while it is away PostgreSQL answers and limits are counted per replica. When a
 * dependency returns, service resumes by itself and nothing written before is lost.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyCommand } from '../../src/commands/keys.js';
import { loadConfigFromObject } from '../../src/config/index.js';
import { startSamplePlatform } from '../../src/demo/platform.js';
import { Browserless } from '../support/browserless.js';
import { appliedNotices, PROMISED_WITHIN_MS } from '../support/change-channels.js';
import { createKey } from '../support/keys.js';
import { freePort } from '../support/ports.js';
import { requirePostgres, requireRedis } from '../support/requirements.js';
import {
  deleteRedisKeys,
  dropSchema,
  POSTGRES_URL,
  REDIS_URL,
  uniqueSchema,
  withPostgres,
} from '../support/services.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';
import { readEvents } from '../support/sse.js';
import { startTcpRelay, type TcpRelay } from '../support/tcp-relay.js';
import { msUntil } from '../support/wait.js';
import { spawnServe, startServe, type ServeProcess } from '../support/serve.js';

const postgres = await requirePostgres();
const redisAvailable = await requireRedis();

const postgresThrough = (port: number) => `postgres://postgres@127.0.0.1:${port}/test`;
const redisThrough = (port: number) => `redis://127.0.0.1:${port}`;

/** Steady traffic: LOOPS callers, each sending one request after another with a short pause. */
const LOOPS = 10;
const LOOP_PAUSE_MS = 5;
const MAX_REQUESTS_PER_LOOP = 1_000;
const TRAFFIC_BEFORE_CUT_MS = 300;
const OUTAGE_MS = 2_000;
/** An answer cached in memory may be served for up to 1 s without asking the database. */
const CACHE_GRACE_MS = 1_000;
/** Timer and scheduling slack on a loaded machine. */
const SLACK_MS = 250;
const RECOVERY_LIMIT_MS = 5_000;
/**
 * Answers to valid credentials wanted from past the cache grace before the dependency returns. A
 * loaded machine answers fewer requests in OUTAGE_MS, so the outage lasts until they have come, up
 * to OUTAGE_LIMIT_MS; the claims are about each answer, not about how many fit in a time.
 */
const ANSWERS_PAST_GRACE = 60;
const OUTAGE_LIMIT_MS = 20_000;

interface Outcome {
  probe: string;
  status: number;
  code?: string;
  json: boolean;
  startedAt: number;
  endedAt: number;
}

interface OutageRun {
  outcomes: Outcome[];
  cutAt: number;
  restoredAt: number;
  /** /readyz while the dependency was away. */
  readiness: { status: number; body: { status?: string; checks?: Record<string, string> } };
}

interface Probe {
  name: string;
  send(): Promise<Response>;
  /** Sent only once the dependency is away: a credential the gateway has never seen before. */
  onlyAfterCut?: boolean;
}

function errorCodeOf(text: string): string | undefined {
  try {
    return (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

/**
 * Valid credentials may only be served (200) or refused because PostgreSQL is away (503): a 401
 * would mean an outage was taken for "not signed in", and sends a person to sign in again for nothing.
 */
const VALID_PROBES = ['known key', 'unseen key', 'session'];

/**
 * Runs LOOPS callers through the probes, cuts the relay, keeps them going through OUTAGE_MS of
 * outage, restores it, and stops once every probe expected to recover has answered 200 again (or
 * RECOVERY_LIMIT_MS has passed). `duringOutage` runs once the in-memory cache grace is over.
 */
async function runThroughOutage(options: {
  url: string;
  relay: TcpRelay;
  probes: Probe[];
  recovering: string[];
  duringOutage?: () => Promise<void>;
}): Promise<OutageRun> {
  const { url, relay, probes, recovering } = options;
  const outcomes: Outcome[] = [];
  let cutAt = Infinity;
  let restoredAt = Infinity;
  let stopped = false;

  const caller = async (index: number): Promise<void> => {
    for (let n = 0; n < MAX_REQUESTS_PER_LOOP && !stopped; n++) {
      const eligible = probes.filter((probe) => !probe.onlyAfterCut || Date.now() >= cutAt);
      const probe = eligible[(index + n) % eligible.length]!;
      const startedAt = Date.now();
      try {
        const response = await probe.send();
        const text = await response.text();
        outcomes.push({
          probe: probe.name,
          status: response.status,
          code: errorCodeOf(text),
          json: /^application\/json/.test(response.headers.get('content-type') ?? ''),
          startedAt,
          endedAt: Date.now(),
        });
      } catch (error) {
        outcomes.push({
          probe: probe.name,
          status: 0,
          code: String(error),
          json: false,
          startedAt,
          endedAt: Date.now(),
        });
      }
      await sleep(LOOP_PAUSE_MS);
    }
  };
  const callers = Array.from({ length: LOOPS }, (_, index) => caller(index));

  await sleep(TRAFFIC_BEFORE_CUT_MS);
  cutAt = Date.now();
  relay.cut();
  await sleep(CACHE_GRACE_MS + SLACK_MS);
  const ready = await fetch(`${url}/readyz`);
  const readiness = { status: ready.status, body: (await ready.json()) as OutageRun['readiness']['body'] };
  await options.duringOutage?.();
  await sleep(Math.max(0, cutAt + OUTAGE_MS - Date.now()));
  const pastGrace = () =>
    outcomes.filter((o) => VALID_PROBES.includes(o.probe) && o.startedAt >= cutAt + CACHE_GRACE_MS + SLACK_MS).length;
  await msUntil(async () => pastGrace() >= ANSWERS_PAST_GRACE, cutAt, { limitMs: OUTAGE_LIMIT_MS });
  restoredAt = Date.now();
  relay.restore();

  const recovered = () =>
    recovering.every((name) =>
      outcomes.some((outcome) => outcome.probe === name && outcome.status === 200 && outcome.startedAt >= restoredAt),
    );
  await msUntil(async () => recovered(), restoredAt, { limitMs: RECOVERY_LIMIT_MS + SLACK_MS });
  // A few more rounds after recovery, so a revoked key that slipped back in would be seen.
  await sleep(300);
  stopped = true;
  await Promise.all(callers);
  return { outcomes, cutAt, restoredAt, readiness };
}

/** Milliseconds from the restore to the first 200 for this probe, or Infinity. */
function recoveryMs(run: OutageRun, probe: string): number {
  const first = run.outcomes.find((o) => o.probe === probe && o.status === 200 && o.startedAt >= run.restoredAt);
  return first ? first.endedAt - run.restoredAt : Infinity;
}

/** Compact summary for failure messages: counts of status/code per probe. */
function summarize(outcomes: Outcome[]): string {
  const counts = new Map<string, number>();
  for (const { probe, status, code } of outcomes) {
    const label = `${probe} ${status}${code ? ` ${code}` : ''}`;
    counts.set(label, (counts.get(label) ?? 0) + 1);
  }
  return [...counts].map(([label, count]) => `${label} x${count}`).join('; ');
}

const timings: string[] = [];
afterAll(() => {
  if (timings.length) console.info(`fault recovery:\n  ${timings.join('\n  ')}`);
});

/** A stack signed in as the faulty provider's user, with keys in every state the probes need. */
async function prepareKeys(stack: FaultyStack, names: string[]) {
  const browser = new Browserless();
  const session = await signInForSession(stack, browser);
  const keys: Record<string, { id: string; key: string }> = {};
  for (const name of names) keys[name] = await createKey(stack, browser, { name });
  const revoke = async (name: string) => {
    const response = await browser.fetch(`${stack.url}/v1/auth/api-keys/${keys[name]!.id}`, {
      method: 'DELETE',
      headers: { origin: stack.url },
    });
    expect(response.status).toBe(204);
  };
  const withKey = (name: string, path = '/echo/fault') =>
    fetch(`${stack.url}${path}`, { headers: { authorization: `Bearer ${keys[name]!.key}` } });
  const withSession = () => fetch(`${stack.url}/v1/auth/me`, { headers: { cookie: `gatehouse_session=${session}` } });
  return { browser, keys, revoke, withKey, withSession };
}

/** Share of the answers to valid credentials, sent while the dependency was away, that were 200. */
function servedShare(run: OutageRun): { served: number; sent: number; share: number } {
  const during = run.outcomes.filter(
    (o) => VALID_PROBES.includes(o.probe) && o.startedAt >= run.cutAt && o.endedAt <= run.restoredAt,
  );
  const served = during.filter((o) => o.status === 200).length;
  return { served, sent: during.length, share: during.length ? served / during.length : 0 };
}

describe.skipIf(!postgres)('PostgreSQL going away under steady API-key traffic', () => {
  const schema = uniqueSchema();
  let relay: TcpRelay;
  let stack: FaultyStack;
  let prepared: Awaited<ReturnType<typeof prepareKeys>>;
  let run: OutageRun;

  beforeAll(async () => {
    relay = await startTcpRelay(5432);
    // The limit is off so the revoked-key probes cannot lock the valid ones out with 429.
    stack = await startFaultyStack({
      database: { url: postgresThrough(relay.port), schema },
      auth: { failed_auth_per_minute: 0 },
    });
    prepared = await prepareKeys(stack, ['known', 'revoked', 'unseen']);
    expect((await prepared.withKey('known')).status).toBe(200);
    expect((await prepared.withKey('revoked')).status).toBe(200);
    await prepared.revoke('revoked');
    expect((await prepared.withKey('revoked')).status).toBe(401);
    run = await runThroughOutage({
      url: stack.url,
      relay,
      probes: [
        { name: 'known key', send: () => prepared.withKey('known') },
        { name: 'revoked key', send: () => prepared.withKey('revoked') },
        { name: 'unseen key', send: () => prepared.withKey('unseen'), onlyAfterCut: true },
        { name: 'session', send: prepared.withSession },
      ],
      recovering: ['known key', 'unseen key', 'session'],
    });
  });

  afterAll(async () => {
    relay?.restore();
    await stack?.close();
    await relay?.close();
    await dropSchema(schema);
  });

  it('answers valid credentials only 200 or 503 JSON database_unavailable: never 401, never a 500', () => {
    const summary = summarize(run.outcomes);
    const valid = run.outcomes.filter((o) => VALID_PROBES.includes(o.probe));
    const wrong = valid.filter(
      (o) => o.status !== 200 && !(o.status === 503 && o.json && o.code === 'database_unavailable'),
    );
    expect(wrong.slice(0, 5), summary).toEqual([]);
    const revoked = run.outcomes.filter((o) => o.probe === 'revoked key');
    expect(revoked.filter((o) => o.status !== 401 && o.status !== 503).slice(0, 5), summary).toEqual([]);
    // Past the cache grace nothing can be answered without PostgreSQL: every valid probe is a 503.
    const refused = valid.filter(
      (o) => o.startedAt >= run.cutAt + CACHE_GRACE_MS + SLACK_MS && o.endedAt <= run.restoredAt,
    );
    expect(refused.length, summary).toBeGreaterThan(0);
    expect(refused.filter((o) => o.status !== 503).slice(0, 5), summary).toEqual([]);
    const { served, sent, share } = servedShare(run);
    timings.push(
      `PostgreSQL away: ${served} of ${sent} valid requests served (${(share * 100).toFixed(1)} %), the rest 503`,
    );
  });

  it('never lets through a key revoked before the outage', () => {
    expect(run.outcomes.filter((o) => o.probe === 'revoked key' && o.status === 200)).toEqual([]);
  });

  it('never lets through, while PostgreSQL is away, a key it had not seen before', () => {
    const passed = run.outcomes.filter(
      (o) => o.probe === 'unseen key' && o.status === 200 && o.endedAt < run.restoredAt,
    );
    expect(passed, `cut at ${run.cutAt}, restored at ${run.restoredAt}`).toEqual([]);
  });

  it(`stops serving even a cached key within ${CACHE_GRACE_MS} ms of the outage`, () => {
    const late = run.outcomes.filter(
      (o) => o.status === 200 && o.startedAt >= run.cutAt + CACHE_GRACE_MS + SLACK_MS && o.endedAt <= run.restoredAt,
    );
    expect(late, summarize(late)).toEqual([]);
  });

  it('reports not ready on /readyz, naming the database', () => {
    expect(run.readiness.status).toBe(503);
    expect(run.readiness.body.status).toBe('not_ready');
    expect(run.readiness.body.checks?.database).not.toBe('ok');
    expect(run.readiness.body.checks?.provider).toBe('ok');
  });

  it(`resumes by itself within ${RECOVERY_LIMIT_MS} ms of PostgreSQL returning`, () => {
    const recovery = Object.fromEntries(
      ['known key', 'unseen key', 'session'].map((probe) => [probe, recoveryMs(run, probe)]),
    );
    timings.push(`PostgreSQL back: first 200 after ${JSON.stringify(recovery)} ms`);
    for (const ms of Object.values(recovery)) expect(ms, summarize(run.outcomes)).toBeLessThan(RECOVERY_LIMIT_MS);
  });

  it('lost nothing: keys, the revocation and the session from before still hold, and new keys work', async () => {
    expect((await fetch(`${stack.url}/readyz`)).status).toBe(200);
    expect((await prepared.withKey('known')).status).toBe(200);
    const revoked = await prepared.withKey('revoked');
    expect(revoked.status).toBe(401);
    expect(errorCodeOf(await revoked.text())).toBe('revoked_api_key');
    expect((await prepared.withSession()).status).toBe(200);
    const { key } = await createKey(stack, prepared.browser, { name: 'after the outage' });
    expect((await fetch(`${stack.url}/echo/after`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
  });

  it('listens for changes again: exactly one LISTEN connection, and a user disabled elsewhere loses their stream', async () => {
    const listening = async () =>
      withPostgres(async (client) => {
        const { rows } = await client.query<{ count: string }>(
          `select count(*) from pg_stat_activity where query ilike 'listen %' and client_port = any($1::int[])`,
          [relay.targetSidePorts()],
        );
        return Number(rows[0]!.count);
      });
    await expect.poll(listening, { timeout: 3_000 }).toBe(1);

    const stream = await prepared.withKey('known', '/slow-stream?chunks=200&delayMs=50');
    expect(stream.status).toBe(200);
    const reading = readEvents(stream);
    await expect.poll(() => reading.events.length).toBeGreaterThan(0);
    await withPostgres(async (client) => {
      const { rows } = await client.query<{ user_id: string }>(
        `select user_id from "${schema}".api_keys where id = $1`,
        [prepared.keys.known!.id],
      );
      // What another replica does when an admin disables a user there; the database announces it.
      await client.query(`update "${schema}".users set disabled_at = $1 where id = $2`, [Date.now(), rows[0]!.user_id]);
    });
    const started = Date.now();
    const giveUp = setTimeout(() => reading.giveUp(), 3 * PROMISED_WITHIN_MS);
    // The gateway may end the response or reset the connection; either is a cut.
    const ended = await reading.finished;
    clearTimeout(giveUp);
    const elapsed = Math.max(0, ended.at - started);
    timings.push(`PostgreSQL back: stream of a user disabled elsewhere cut after ${elapsed} ms`);
    expect(reading.gaveUp, 'the stream was still open').toBe(false);
    expect(reading.events.some((event) => event.data === '[DONE]')).toBe(false);
    expect(elapsed).toBeLessThan(PROMISED_WITHIN_MS);
  });
});

/** Reads one Redis key straight from Redis, past any relay. */
async function readRedis(key: string): Promise<string | null> {
  const redis = new Redis(REDIS_URL);
  try {
    return await redis.get(key);
  } finally {
    redis.disconnect();
  }
}

describe.skipIf(!postgres || !redisAvailable)('Redis going away under steady API-key traffic', () => {
  const schema = uniqueSchema();
  const keyPrefix = `t${randomBytes(6).toString('hex')}:`;
  let relay: TcpRelay;
  let stack: FaultyStack;
  let prepared: Awaited<ReturnType<typeof prepareKeys>>;
  let run: OutageRun;
  let revokedDuringOutageAt = Infinity;
  let versionBeforeCut: number;

  beforeAll(async () => {
    relay = await startTcpRelay(6379);
    stack = await startFaultyStack({
      database: { url: POSTGRES_URL, schema },
      redis: { url: redisThrough(relay.port), key_prefix: keyPrefix },
      auth: { failed_auth_per_minute: 0 },
    });
    prepared = await prepareKeys(stack, ['known', 'revoked', 'unseen', 'revoked while away']);
    for (const name of ['known', 'revoked', 'revoked while away']) {
      expect((await prepared.withKey(name)).status).toBe(200);
    }
    await prepared.revoke('revoked');
    expect((await prepared.withKey('revoked')).status).toBe(401);
    versionBeforeCut = Number(await readRedis(`${keyPrefix}key:version`));
    run = await runThroughOutage({
      url: stack.url,
      relay,
      probes: [
        { name: 'known key', send: () => prepared.withKey('known') },
        { name: 'revoked key', send: () => prepared.withKey('revoked') },
        { name: 'revoked while away', send: () => prepared.withKey('revoked while away') },
        { name: 'unseen key', send: () => prepared.withKey('unseen'), onlyAfterCut: true },
        { name: 'session', send: prepared.withSession },
      ],
      recovering: ['known key', 'unseen key', 'session'],
      // What `gatehouse keys revoke` or another replica does: the database row changes, and Redis
      // cannot be told, since it is away.
      duringOutage: async () => {
        // The database announces the change on commit, which may reach the gateway before the
        // test hears that the update is done: the change cannot precede this moment.
        revokedDuringOutageAt = Date.now();
        await withPostgres((client) =>
          client.query(`update "${schema}".api_keys set revoked_at = $1 where id = $2`, [
            Date.now(),
            prepared.keys['revoked while away']!.id,
          ]),
        );
      },
    });
  });

  afterAll(async () => {
    relay?.restore();
    await stack?.close();
    await relay?.close();
    await dropSchema(schema);
    await deleteRedisKeys(keyPrefix);
  });

  it('answers only 200 or 401: Redis being away is never a 503 and never a 500', () => {
    const summary = summarize(run.outcomes);
    expect(run.outcomes.filter((o) => o.status !== 200 && o.status !== 401).slice(0, 5), summary).toEqual([]);
    const valid = run.outcomes.filter((o) => VALID_PROBES.includes(o.probe));
    expect(valid.filter((o) => o.status !== 200).slice(0, 5), summary).toEqual([]);
  });

  it('serves at least 99 % of requests with valid credentials while Redis is away', () => {
    const { served, sent, share } = servedShare(run);
    timings.push(`Redis away: ${served} of ${sent} valid requests served (${(share * 100).toFixed(1)} %)`);
    expect(sent).toBeGreaterThan(50);
    expect(share).toBeGreaterThanOrEqual(0.99);
  });

  it('serves, from PostgreSQL, a key it had not seen before Redis went away', () => {
    const unseen = run.outcomes.filter((o) => o.probe === 'unseen key' && o.endedAt < run.restoredAt);
    expect(unseen.length).toBeGreaterThan(0);
    expect(
      unseen.filter((o) => o.status !== 200),
      summarize(unseen),
    ).toEqual([]);
  });

  it('never lets through a key revoked before the outage', () => {
    expect(run.outcomes.filter((o) => o.probe === 'revoked key' && o.status === 200)).toEqual([]);
  });

  it(`refuses, from the moment PostgreSQL's notice is applied, a key revoked in the database while Redis is away`, () => {
    // The gateway's debug log records each notice it applies: the refusals must follow the notice,
    // not the cached answer ageing out.
    const notices = appliedNotices(stack.logs.join(''), 'keys_changed', revokedDuringOutageAt).filter(
      (notice) => notice.channel === 'postgres',
    );
    expect(notices.length, 'no keys_changed notice from PostgreSQL applied after the revocation').toBeGreaterThan(0);
    const appliedAt = notices[0]!.at;
    const served = run.outcomes.filter((o) => o.probe === 'revoked while away' && o.status === 200);
    const lastServed = Math.max(revokedDuringOutageAt, ...served.map((o) => o.startedAt));
    timings.push(
      `Redis away: PostgreSQL's notice applied ${appliedAt - revokedDuringOutageAt} ms after the revocation ` +
        `was sent; the key last served to a request sent ${lastServed - revokedDuringOutageAt} ms after`,
    );
    expect(
      served.filter((o) => o.startedAt > appliedAt),
      summarize(run.outcomes),
    ).toEqual([]);
    expect(appliedAt - revokedDuringOutageAt).toBeLessThan(PROMISED_WITHIN_MS);
  });

  it('refuses, once Redis is back, a key revoked while it was away (its shared entry is not trusted)', async () => {
    const after = await prepared.withKey('revoked while away');
    expect(after.status).toBe(401);
    expect(errorCodeOf(await after.text())).toBe('revoked_api_key');
  });

  it('stays ready on /readyz, reporting Redis as not ok', () => {
    expect(run.readiness.status).toBe(200);
    expect(run.readiness.body.checks?.redis).not.toBe('ok');
    expect(run.readiness.body.checks?.database).toBe('ok');
  });

  it('drops the shared answers written before the outage once Redis is back, and shares again', async () => {
    // Bumped on reconnection (which backs off up to 2 s): entries written before no longer match.
    await expect
      .poll(async () => Number(await readRedis(`${keyPrefix}key:version`)), { timeout: RECOVERY_LIMIT_MS })
      .toBeGreaterThan(versionBeforeCut);
    await sleep(CACHE_GRACE_MS);
    expect((await prepared.withKey('known')).status).toBe(200);
    const version = await readRedis(`${keyPrefix}key:version`);
    const redis = new Redis(REDIS_URL);
    try {
      const entries = await redis.mget(
        ...(await redis.keys(`${keyPrefix}key:*`)).filter((k) => !k.endsWith(':version')),
      );
      expect(
        entries.some((entry) => entry !== null && (JSON.parse(entry) as { version: string }).version === version),
      ).toBe(true);
    } finally {
      redis.disconnect();
    }
  });

  it(`resumes within ${RECOVERY_LIMIT_MS} ms of Redis returning, having lost nothing`, async () => {
    const recovery = Object.fromEntries(
      ['known key', 'unseen key', 'session'].map((probe) => [probe, recoveryMs(run, probe)]),
    );
    timings.push(`Redis back: first 200 after ${JSON.stringify(recovery)} ms`);
    for (const ms of Object.values(recovery)) expect(ms, summarize(run.outcomes)).toBeLessThan(RECOVERY_LIMIT_MS);
    expect((await fetch(`${stack.url}/readyz`)).status).toBe(200);
    expect((await prepared.withKey('known')).status).toBe(200);
    expect((await prepared.withKey('revoked')).status).toBe(401);
    expect((await prepared.withSession()).status).toBe(200);
  });
});

describe.skipIf(!postgres || !redisAvailable)('Redis away with the failed-auth limit on', () => {
  const schema = uniqueSchema();
  const keyPrefix = `t${randomBytes(6).toString('hex')}:`;
  const limit = 5;
  let relay: TcpRelay;
  let stack: FaultyStack;

  beforeAll(async () => {
    relay = await startTcpRelay(6379);
    stack = await startFaultyStack({
      database: { url: POSTGRES_URL, schema },
      redis: { url: redisThrough(relay.port), key_prefix: keyPrefix },
      auth: { failed_auth_per_minute: limit },
    });
  });

  afterAll(async () => {
    relay?.restore();
    await stack?.close();
    await relay?.close();
    await dropSchema(schema);
    await deleteRedisKeys(keyPrefix);
  });

  const withUnknownKey = () =>
    fetch(`${stack.url}/echo/fault`, { headers: { authorization: `Bearer gth_${randomBytes(18).toString('hex')}` } });

  it("counts a key's requests per minute in this process while Redis is away: limited, never refused for it", async () => {
    const browser = new Browserless();
    await signInForSession(stack, browser);
    const { key } = await createKey(stack, browser, { name: 'three a minute', requests_per_minute: 3 });
    relay.cut();
    try {
      const statuses: number[] = [];
      for (let request = 0; request < 4; request++) {
        statuses.push(
          (await fetch(`${stack.url}/echo/limited`, { headers: { authorization: `Bearer ${key}` } })).status,
        );
      }
      expect(statuses).toEqual([200, 200, 200, 429]);
    } finally {
      relay.restore();
    }
  });

  it('counts failures in this process while Redis is away, and in Redis again once it is back', async () => {
    const prepared = await prepareKeys(stack, ['known']);
    expect((await prepared.withKey('known')).status).toBe(200);
    relay.cut();
    try {
      expect((await prepared.withKey('known')).status).toBe(200);
      const statuses: number[] = [];
      for (let attempt = 0; attempt <= limit; attempt++) statuses.push((await withUnknownKey()).status);
      // The limit holds per replica: the last attempt is over it.
      expect(statuses).toEqual([...Array<number>(limit).fill(401), 429]);
      expect(await readRedis(`${keyPrefix}failed_auth:127.0.0.1`)).toBeNull();
    } finally {
      relay.restore();
    }
    const counted = async () => {
      expect([401, 429]).toContain((await withUnknownKey()).status);
      return Number(await readRedis(`${keyPrefix}failed_auth:127.0.0.1`));
    };
    await expect.poll(counted, { interval: 100, timeout: RECOVERY_LIMIT_MS }).toBeGreaterThan(0);
  });
});

describe.skipIf(!postgres || !redisAvailable)('a gateway started while Redis is unreachable', () => {
  it('starts ready, reporting Redis as not ok, serves keys, and uses Redis once it comes', async () => {
    const schema = uniqueSchema();
    const keyPrefix = `t${randomBytes(6).toString('hex')}:`;
    const relay = await startTcpRelay(6379);
    relay.cut();
    let stack: FaultyStack | undefined;
    try {
      stack = await startFaultyStack({
        database: { url: POSTGRES_URL, schema },
        redis: { url: redisThrough(relay.port), key_prefix: keyPrefix },
      });
      const away = await fetch(`${stack.url}/readyz`);
      expect(away.status).toBe(200);
      expect(((await away.json()) as OutageRun['readiness']['body']).checks?.redis).not.toBe('ok');
      const prepared = await prepareKeys(stack, ['known']);
      expect((await prepared.withKey('known')).status).toBe(200);
      relay.restore();
      const restoredAt = Date.now();
      let redisCheck: string | undefined;
      const reportedOk = await msUntil(
        async () =>
          (redisCheck = ((await (await fetch(`${stack!.url}/readyz`)).json()) as OutageRun['readiness']['body']).checks
            ?.redis) === 'ok',
        restoredAt,
        { everyMs: 100, limitMs: RECOVERY_LIMIT_MS },
      );
      timings.push(`Redis reachable after start: reported ok ${reportedOk} ms after it came`);
      expect(redisCheck).toBe('ok');
    } finally {
      relay.restore();
      await stack?.close();
      await relay.close();
      await dropSchema(schema);
      await deleteRedisKeys(keyPrefix);
    }
  });
});

describe.skipIf(!postgres)('a gateway process whose PostgreSQL connections die under load', () => {
  it('keeps running, refusing with 503 until PostgreSQL returns, never taking the outage for "not signed in"', async () => {
    const schema = uniqueSchema();
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-faults-'));
    const relay = await startTcpRelay(5432);
    const providerPort = await freePort();
    const platform = await startSamplePlatform({ chunkDelayMs: 5 });
    let gateway: ServeProcess | undefined;
    try {
      const edits = (port: number, databaseUrl: string) => ({
        powerml: { website: `http://127.0.0.1:${port}` },
        // Never reached: unknown session cookies are looked up in the database, not at the provider.
        auth_provider: {
          client_id: 'gatehouse-test',
          client_secret: 'unused-secret',
          server_metadata_url: `http://127.0.0.1:${providerPort}/.well-known/openid-configuration`,
        },
        auth: { failed_auth_per_minute: 0 },
        gateway: { host: '127.0.0.1', port, upstream: platform.url, data_dir: join(dir, 'data') },
        database: { url: databaseUrl, schema },
      });
      // A valid key, made as an operator would before the gateway starts (same data_dir, same hash secret).
      const printed = await createKeyCommand(loadConfigFromObject(edits(1, POSTGRES_URL), 'test'), {
        email: 'ops@example.test',
        name: 'valid through the outage',
      });
      const apiKey = /^gth_\w+$/m.exec(printed)![0];
      gateway = await startServe({
        dir,
        config: edits(await freePort(), postgresThrough(relay.port)),
        readyPath: '/healthz',
      });
      const url = gateway.url;
      const probes: Probe[] = [
        // A cookie the gateway has never seen: each one is a PostgreSQL query, never a cached answer.
        {
          name: 'unknown session',
          send: () =>
            fetch(`${url}/v1/auth/me`, { headers: { cookie: `gatehouse_session=${randomBytes(16).toString('hex')}` } }),
        },
        // May only be served or refused for the outage: 200 or 503, never 401.
        {
          name: 'valid key',
          send: () => fetch(`${url}/echo/fault`, { headers: { authorization: `Bearer ${apiKey}` } }),
        },
      ];
      const outcomes: Outcome[] = [];
      let stopped = false;
      const caller = async (index: number) => {
        for (let n = 0; n < MAX_REQUESTS_PER_LOOP && !stopped && !gateway!.hasExited(); n++) {
          const probe = probes[(index + n) % probes.length]!;
          const startedAt = Date.now();
          const { status, code } = await probe.send().then(
            async (response) => ({ status: response.status, code: errorCodeOf(await response.text()) }),
            (error: Error) => ({
              status: 0,
              code: `${error.message}: ${String((error.cause as Error | undefined)?.message)}`,
            }),
          );
          outcomes.push({ probe: probe.name, status, code, json: true, startedAt, endedAt: Date.now() });
          await sleep(LOOP_PAUSE_MS);
        }
      };
      const callers = Array.from({ length: LOOPS }, (_, index) => caller(index));
      await sleep(TRAFFIC_BEFORE_CUT_MS);
      const cutAt = Date.now();
      relay.cut();
      await sleep(OUTAGE_MS);
      const answered = (probe: string, from: number, to = Infinity, status?: number) =>
        outcomes.filter(
          (o) =>
            o.probe === probe &&
            o.startedAt >= from &&
            o.endedAt <= to &&
            (status === undefined || o.status === status),
        ).length;
      await msUntil(
        async () =>
          answered('unknown session', cutAt + SLACK_MS) >= ANSWERS_PAST_GRACE / 2 &&
          answered('valid key', cutAt + CACHE_GRACE_MS + SLACK_MS) >= ANSWERS_PAST_GRACE / 2,
        cutAt,
        { limitMs: OUTAGE_LIMIT_MS },
      );
      const restoredAt = Date.now();
      relay.restore();
      await msUntil(
        async () => answered('valid key', restoredAt + RECOVERY_LIMIT_MS / 5, Infinity, 200) > 0,
        restoredAt,
        {
          limitMs: RECOVERY_LIMIT_MS,
        },
      );
      stopped = true;
      await Promise.all(callers);
      const summary = `${summarize(outcomes)}\n${gateway.output().slice(-3_000)}`;
      expect(gateway.hasExited(), summary).toBe(false);
      const answers = (probe: string, statuses: number[]) =>
        outcomes.filter((o) => o.probe === probe && !statuses.includes(o.status)).slice(0, 5);
      expect(answers('unknown session', [401, 503]), summary).toEqual([]);
      expect(answers('valid key', [200, 503]), summary).toEqual([]);
      expect(
        outcomes.filter((o) => o.status === 503 && o.code !== 'database_unavailable').slice(0, 5),
        summary,
      ).toEqual([]);
      // While PostgreSQL is away nothing it alone can answer may be answered otherwise.
      const during = (probe: string, from: number) =>
        outcomes.filter((o) => o.probe === probe && o.startedAt >= from && o.endedAt <= restoredAt);
      for (const outage of [
        during('unknown session', cutAt + SLACK_MS),
        during('valid key', cutAt + CACHE_GRACE_MS + SLACK_MS),
      ]) {
        expect(outage.length, summary).toBeGreaterThan(0);
        expect(outage.filter((o) => o.status !== 503).slice(0, 5), summary).toEqual([]);
      }
      const back = outcomes.filter((o) => o.probe === 'valid key' && o.startedAt >= restoredAt + RECOVERY_LIMIT_MS / 5);
      expect(
        back.some((o) => o.status === 200),
        summary,
      ).toBe(true);
      expect((await fetch(`${url}/v1/auth/me`)).status).toBe(401);
      timings.push(`PostgreSQL away (gatehouse serve): ${summarize(outcomes)}`);
    } finally {
      await gateway?.stop();
      await platform.close();
      await relay.close();
      await dropSchema(schema);
      rmSync(dir, { recursive: true, force: true });
    }
    // A process of its own: on a loaded machine starting it (tsx compiling the sources) alone may
    // take most of the 45 s startServe waits, before the outage run's few seconds.
  }, 90_000);
});

describe('a gateway started while PostgreSQL is unreachable', () => {
  const unreachable = [
    { label: 'with database.schema', schema: true },
    { label: 'without database.schema', schema: false },
  ];
  it.each(unreachable)(
    'exits 1 with a message naming PostgreSQL and its address, never the password ($label)',
    async ({ schema }) => {
      const dir = mkdtempSync(join(tmpdir(), 'gatehouse-faults-'));
      const nothingThere = await freePort();
      const password = `pw-${randomBytes(8).toString('hex')}`;
      try {
        const port = await freePort();
        const gateway = spawnServe({
          dir,
          config: {
            auth: { disable_auth: true },
            gateway: { host: '127.0.0.1', port, upstream: 'http://127.0.0.1:9', data_dir: join(dir, 'data') },
            database: {
              url: `postgres://postgres:${password}@127.0.0.1:${nothingThere}/test`,
              ...(schema ? { schema: uniqueSchema() } : {}),
            },
          },
        });
        const code = await Promise.race([
          gateway.exited.then(({ code }) => code),
          sleep(25_000).then(() => 'still running' as const),
        ]);
        await gateway.stop();
        const output = gateway.output();
        expect(code, output).toBe(1);
        expect(output).toMatch(/^gatehouse: /m);
        expect(output).toMatch(/PostgreSQL/);
        expect(output).toContain(`127.0.0.1:${nothingThere}`);
        expect(output).not.toContain(password);
        expect(output).not.toMatch(/unexpected failure/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
