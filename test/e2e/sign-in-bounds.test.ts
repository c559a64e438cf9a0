/**
 * Unauthenticated sign-in endpoints cannot grow the gateway without bound (issue 12, finding 7,
 * at a tenth of its scale): a provider error string on the callback never becomes a metrics label
 * or an audit reason of its own, failed sign-ins fill the audit log at a bounded rate per
 * address, and `/v1/auth/login` keeps a bounded number of pending sign-ins per address.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIGN_IN_FAILURES_PER_ADDRESS_PER_MINUTE } from '../../src/audit/log.js';
import { SIGN_IN_FAILURES } from '../../src/oidc/failures.js';
import { MAX_PENDING_LOGINS_PER_ADDRESS } from '../../src/oidc/login.js';
import { openStorage, type DatabaseSettings, type Storage } from '../../src/storage/database.js';
import { Browserless } from '../support/browserless.js';
import { signIn } from '../support/sign-in.js';
import { startFaultyStack, testDatabase, type FaultyStack } from '../support/stack.js';

const CALLBACKS = 2_000;
const LOGINS = 1_000;
const CONCURRENCY = 20;

/** A database the gateway and the test both open: a file for SQLite, the test schema for PostgreSQL. */
function sharedDatabase(): DatabaseSettings {
  const database = testDatabase() as unknown as DatabaseSettings;
  if (database.url !== 'sqlite::memory:') return database;
  return { url: `sqlite:${join(mkdtempSync(join(tmpdir(), 'gatehouse-bounds-')), 'gatehouse.db')}` };
}

/** Runs `count` calls of `call`, CONCURRENCY at a time. */
async function repeat(count: number, call: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) await call(next++);
    }),
  );
}

let stack: FaultyStack;
let storage: Storage;
beforeAll(async () => {
  const database = sharedDatabase();
  stack = await startFaultyStack({ database, gateway: { metrics_port: 0 } });
  storage = await openStorage(database);
});
afterAll(async () => {
  await storage?.close();
  await stack?.close();
});

function auditLines(event: string): Array<{ detail: Record<string, unknown> }> {
  return stack.logs
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.includes(`"audit: ${event}"`))
    .map((line) => (JSON.parse(line) as { audit: { detail: Record<string, unknown> } }).audit);
}

describe('callbacks carrying made-up provider errors', () => {
  it(`${CALLBACKS} random error strings add no metrics series beyond the fixed reasons, and show each raw only as a detail`, async () => {
    await repeat(CALLBACKS, async () => {
      const response = await fetch(`${stack.url}/v1/auth/auth?error=${randomBytes(12).toString('hex')}`);
      await response.body?.cancel();
    });
    const exposition = await stack.gateway.metrics!.registry.metrics();
    const failureSeries = exposition
      .split('\n')
      .filter((line) => line.startsWith('gatehouse_sign_ins_total{') && line.includes('result="failure"'));
    expect(failureSeries).toEqual([expect.stringContaining('reason="provider_other"')]);
    expect(failureSeries.length).toBeLessThanOrEqual(Object.keys(SIGN_IN_FAILURES).length);

    const page = await fetch(`${stack.url}/v1/auth/auth?error=consent_required`);
    const text = await page.text();
    expect(page.status).toBe(403);
    expect(text).toContain('You declined');
    expect(text).toContain('Details: consent_required');
  });

  it(`${CALLBACKS} failures from one address store at most ${SIGN_IN_FAILURES_PER_ADDRESS_PER_MINUTE} audit entries a minute, counting the rest`, async () => {
    const stored = auditLines('sign_in_failed');
    expect(stored.length).toBeLessThanOrEqual(SIGN_IN_FAILURES_PER_ADDRESS_PER_MINUTE);
    expect(new Set(stored.map((entry) => entry.detail.reason))).toEqual(new Set(['provider_other']));
    const rows = await storage.db
      .selectFrom('audit_events')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('event', '=', 'sign_in_failed')
      .executeTakeFirstOrThrow();
    expect(Number(rows.n)).toBeLessThanOrEqual(SIGN_IN_FAILURES_PER_ADDRESS_PER_MINUTE);
  });
});

describe('sign-ins started and never finished', () => {
  it(`${LOGINS} calls of /v1/auth/login from one address keep at most ${MAX_PENDING_LOGINS_PER_ADDRESS} pending; the newest still completes`, async () => {
    await repeat(LOGINS, async () => {
      const response = await fetch(`${stack.url}/v1/auth/login`, { redirect: 'manual' });
      expect(response.status).toBe(302);
      await response.body?.cancel();
    });
    const rows = await storage.db
      .selectFrom('login_flows')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(rows.n)).toBeLessThanOrEqual(MAX_PENDING_LOGINS_PER_ADDRESS);

    const browser = new Browserless();
    expect((await signIn(stack, browser)).callback.status).toBe(302);
  });

  it('drops the oldest pending sign-in past the cap, whose person is told to try again', async () => {
    const oldest = new Browserless();
    const login = await oldest.fetch(`${stack.url}/v1/auth/login`);
    const authorize = await oldest.fetch(login.headers.get('location')!);
    await repeat(MAX_PENDING_LOGINS_PER_ADDRESS, async () => {
      const response = await fetch(`${stack.url}/v1/auth/login`, { redirect: 'manual' });
      await response.body?.cancel();
    });
    const callback = await oldest.fetch(authorize.headers.get('location')!);
    expect(callback.status).toBe(400);
    expect(await callback.text()).toContain('Sign-in expired, try again');
  });
});
