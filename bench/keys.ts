/**
 * API-key verification and the API-key proxy path, each beside a peer measured in the same run:
 *  - in-process verifications per second: Gatehouse's cached path, its uncached path (cache dropped
 *    before each call: checksum + HMAC + SQLite read), and the naive peer (a SQLite lookup of the
 *    plaintext key, as a hand-written Express middleware would do);
 *  - requests per second through the gateway with an API key, against the sample platform direct.
 * Run: npm run bench:keys  (wrk from Debian's `wrk` package for the HTTP part)
 */
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { loadKeyHashSecret } from '../src/keys/hash-secret.js';
import { ApiKeyStore } from '../src/keys/store.js';
import { ApiKeyVerifier } from '../src/keys/verify.js';
import { openStorage } from '../src/storage/database.js';
import { recordSignIn } from '../src/users/store.js';
import { startSamplePlatform } from '../src/demo/platform.js';
import { startFaultyStack } from '../test/support/stack.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);

async function perSecond(label: string, work: () => Promise<unknown> | unknown): Promise<number> {
  for (let i = 0; i < 2_000; i++) await work();
  let count = 0;
  const end = performance.now() + SECONDS * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 500; i++) await work();
    count += 500;
  }
  const rate = count / SECONDS;
  console.log(`${label.padEnd(52)} ${Math.round(rate).toLocaleString('en-US').padStart(12)} /s`);
  return rate;
}

/** Each key verified once by a fresh verifier, so every call misses the cache and reads the database. */
async function firstLookups(label: string, verifier: ApiKeyVerifier, keys: Array<{ key: string }>): Promise<number> {
  const start = performance.now();
  for (const { key } of keys) await verifier.verify(key);
  const rate = keys.length / ((performance.now() - start) / 1000);
  console.log(`${label.padEnd(52)} ${Math.round(rate).toLocaleString('en-US').padStart(12)} /s`);
  return rate;
}

async function verification(): Promise<void> {
  console.log('\n## Key verification, in-process, one core\n');
  const storage = await openStorage(`sqlite:${mkdtempSync(join(tmpdir(), 'gh-bench-'))}/bench.db`);
  const store = new ApiKeyStore(storage.db, 'bench-secret-bench-secret-bench-secret', 'gth_');
  const user = await recordSignIn(storage.db, { issuer: 'bench', subject: 'u1', email: 'u1@example.com' });
  const keys = await Promise.all(Array.from({ length: 20_000 }, (_, i) => store.create(user, `k${i}`, null)));
  const verifier = new ApiKeyVerifier(store, 'gth_');
  const key = keys[0]!.key;
  const cached = await perSecond('gatehouse, cached (valid key)', () => verifier.verify(key));
  const uncached = await firstLookups('gatehouse, uncached (checksum + HMAC + SQLite)', verifier, keys.slice(1));
  await perSecond('gatehouse, malformed key rejected', () =>
    verifier.verify('gth_notavalidkey').catch(() => undefined),
  );

  const naive = new SqliteDatabase(':memory:');
  naive.exec('create table keys (key text primary key, user text)');
  const insert = naive.prepare('insert into keys values (?, ?)');
  for (const k of keys) insert.run(k.key, 'u1');
  const lookup = naive.prepare('select user from keys where key = ?');
  const peer = await perSecond('peer: plaintext key looked up in SQLite each time', () => lookup.get(key));
  console.log(
    `\nratio cached / peer: ${(cached / peer).toFixed(2)}x   uncached / peer: ${(uncached / peer).toFixed(2)}x`,
  );
  await storage.close();
}

interface WrkResult {
  rps: number;
  p50: string;
  p99: string;
}

/** Async: the servers under test run in this process and must keep answering while wrk runs. */
async function wrk(url: string, headers: string[] = []): Promise<WrkResult> {
  const args = ['-t2', '-c32', `-d${SECONDS}s`, '--latency', ...headers.flatMap((h) => ['-H', h]), url];
  const { stdout: out } = await promisify(execFile)('wrk', args, { encoding: 'utf8' });
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (non2xx) throw new Error(`wrk saw ${non2xx[1]} failed responses from ${url}`);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
    p50: /50%\s+(\S+)/.exec(out)?.[1] ?? '?',
    p99: /99%\s+(\S+)/.exec(out)?.[1] ?? '?',
  };
}

async function proxied(): Promise<void> {
  console.log('\n## GET /v1/models through the gateway with an API key, wrk -t2 -c32\n');
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return console.log('wrk is not installed: apt-get install wrk');
  }
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-'));
  const platform = await startSamplePlatform({ record: false });
  const stack = await startFaultyStack({
    gateway: { upstream: platform.url, data_dir: dir },
    database: { url: `sqlite:${dir}/gatehouse.db` },
  });
  const storage = await openStorage(`sqlite:${dir}/gatehouse.db`);
  const store = new ApiKeyStore(storage.db, loadKeyHashSecret(undefined, dir), 'gth_');
  const user = await recordSignIn(storage.db, { issuer: 'bench', subject: 'u1', email: 'u1@example.com' });
  const { key } = await store.create(user, 'bench', null);
  await storage.close();

  const direct = await wrk(`${platform.url}/v1/models`);
  const gated = await wrk(`${stack.url}/v1/models`, [`Authorization: Bearer ${key}`]);
  for (const [label, result] of [
    ['direct to the sample platform', direct],
    ['through Gatehouse with an API key', gated],
  ] as const) {
    console.log(
      `${label.padEnd(40)} ${Math.round(result.rps).toLocaleString('en-US').padStart(9)} req/s   p50 ${result.p50}   p99 ${result.p99}`,
    );
  }
  console.log(`\nratio gatehouse / direct: ${(gated.rps / direct.rps).toFixed(2)}x`);
  await stack.close();
  await platform.close();
}

await verification();
await proxied();
