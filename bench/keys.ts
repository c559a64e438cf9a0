/**
 * API-key verification in-process, beside its peer measured in the same run:
 *  - Gatehouse's cached path (a valid key seen before);
 *  - its uncached path: every key verified once by the verifier, so each is checksum + HMAC + a
 *    SQLite read;
 *  - a malformed key, refused on its shape;
 *  - the naive peer: the plaintext key looked up in SQLite every time, as a hand-written Express
 *    middleware does (bench/peers/express-key.js).
 * The proxy path with an API key is measured over HTTP, each server in its own process, by
 * `npm run bench` (bench/run.ts).
 *
 * Run: npm run bench:keys  (BENCH_SECONDS per measurement, default 3; --json prints one JSON line)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { ApiKeyStore } from '../src/keys/store.js';
import { ApiKeyVerifier } from '../src/keys/verify.js';
import { openStorage } from '../src/storage/database.js';
import { recordSignIn } from '../src/users/store.js';
import type { VerificationRates } from './lib/report.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const KEYS = 20_000;
const asJson = process.argv.includes('--json');

function report(label: string, rate: number): number {
  if (!asJson) console.log(`${label.padEnd(52)} ${Math.round(rate).toLocaleString('en-US').padStart(12)} /s`);
  return rate;
}

async function perSecond(label: string, work: () => Promise<unknown> | unknown): Promise<number> {
  for (let i = 0; i < 2_000; i++) await work();
  let count = 0;
  const end = performance.now() + SECONDS * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 500; i++) await work();
    count += 500;
  }
  return report(label, count / SECONDS);
}

/** Each key verified once by a fresh verifier, so every call misses the cache and reads the database. */
async function firstLookups(label: string, verifier: ApiKeyVerifier, keys: Array<{ key: string }>): Promise<number> {
  const start = performance.now();
  for (const { key } of keys) await verifier.verify(key);
  return report(label, keys.length / ((performance.now() - start) / 1000));
}

async function verification(): Promise<VerificationRates> {
  if (!asJson) console.log('\n## Key verification, in-process, one core\n');
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-'));
  const storage = await openStorage(`sqlite:${dir}/bench.db`);
  try {
    const secret = 'bench-secret-bench-secret-bench-secret';
    const store = new ApiKeyStore(storage.db, secret, 'gth_');
    const user = await recordSignIn(storage.db, { issuer: 'bench', subject: 'u1', email: 'u1@example.com' });
    // One transaction: a commit (and fsync) per key would make setup take most of a minute.
    const keys = await storage.db.transaction().execute(async (trx) => {
      const inTransaction = new ApiKeyStore(trx, secret, 'gth_');
      const created = [];
      for (let i = 0; i < KEYS; i++) created.push(await inTransaction.create(user, `k${i}`, null));
      return created;
    });
    const verifier = new ApiKeyVerifier(store, 'gth_');
    const key = keys[0]!.key;
    const cached = await perSecond('gatehouse, cached (valid key)', () => verifier.verify(key));
    const uncached = await firstLookups('gatehouse, uncached (checksum + HMAC + SQLite)', verifier, keys.slice(1));
    const malformed = await perSecond('gatehouse, malformed key rejected', () =>
      verifier.verify('gth_notavalidkey').catch(() => undefined),
    );

    const naive = new SqliteDatabase(':memory:');
    naive.exec('create table keys (key text primary key, user text)');
    const insert = naive.prepare('insert into keys values (?, ?)');
    for (const k of keys) insert.run(k.key, 'u1');
    const lookup = naive.prepare('select user from keys where key = ?');
    const peer = await perSecond('peer: plaintext key looked up in SQLite each time', () => lookup.get(key));
    naive.close();
    if (!asJson) {
      console.log(
        `\nratio cached / peer: ${(cached / peer).toFixed(2)}x   uncached / peer: ${(uncached / peer).toFixed(2)}x`,
      );
    }
    await verifier.flush();
    return { cached, uncached, malformed, peer };
  } finally {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const rates = await verification();
if (asJson) console.log(JSON.stringify(rates));
