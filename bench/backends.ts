/**
 * The API-key proxy path on each storage backend, side by side in one run: SQLite, PostgreSQL,
 * and PostgreSQL + Redis. Each gateway runs as its own process (`node dist/cli.js serve`) in front
 * of the same nginx upstream; wrk sends POST /v1/chat/completions with the key.
 *
 * Run: npm run build && node --import tsx bench/backends.ts   (BENCH_SECONDS, default 10)
 * Needs nginx and wrk (apt-get install nginx-light wrk), PostgreSQL on 127.0.0.1:5432 and Redis on 6379.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { startJsonUpstream } from './lib/nginx.js';
import { startProcess, stopAll, waitForStatus } from './lib/processes.js';
import { CHAT_PATH, medianOf, runWrk, writeChatScript, type WrkRun } from './lib/wrk.js';
import { freePort } from '../test/support/ports.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const POSTGRES = process.env.GATEHOUSE_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const work = mkdtempSync(join(tmpdir(), 'gatehouse-backends-'));
const logs = join(work, 'logs');
mkdirSync(logs);
const script = writeChatScript(work);
const schema = `bench_${randomBytes(4).toString('hex')}`;
const upstream = await startJsonUpstream();

const backends: Array<[string, Record<string, unknown>]> = [
  ['SQLite', { database: { url: `sqlite:${join(work, 'gatehouse.db')}` } }],
  ['PostgreSQL', { database: { url: POSTGRES, schema } }],
  [
    'PostgreSQL + Redis',
    { database: { url: POSTGRES, schema }, redis: { url: 'redis://127.0.0.1:6379', key_prefix: `${schema}:` } },
  ],
];

const results: Array<[string, WrkRun]> = [];
try {
  for (const [label, storage] of backends) {
    const port = await freePort();
    const config = join(work, `${label.replace(/\W+/g, '-')}.json`);
    writeFileSync(
      config,
      JSON.stringify({
        auth: { key_hash_secret: 'bench-key-hash-secret-that-is-long-enough-1234', failed_auth_per_minute: 0 },
        powerml: { website: `http://127.0.0.1:${port}` },
        auth_provider: {
          client_id: 'bench',
          client_secret: 'bench',
          // Keys need no provider; sign-in is not measured here.
          server_metadata_url: 'http://127.0.0.1:9/.well-known/openid-configuration',
        },
        gateway: { host: '127.0.0.1', port, upstream: upstream.url, data_dir: join(work, 'data'), log_level: 'warn' },
        ...storage,
      }),
    );
    const { stdout } = await promisify(execFile)(process.execPath, [
      'dist/cli.js',
      'keys',
      'create',
      '--email',
      'bench@example.com',
      '--name',
      label,
      '--config',
      config,
    ]);
    const key = /^(gth_\S+)$/m.exec(stdout)![1]!;
    const service = startProcess(`gatehouse-${label}`, process.execPath, ['dist/cli.js', 'serve', '--config', config], {
      logDir: logs,
    });
    await waitForStatus(`http://127.0.0.1:${port}/healthz`, service);
    const runs: WrkRun[] = [];
    const options = {
      url: `http://127.0.0.1:${port}${CHAT_PATH}`,
      connections: 32,
      script,
      headers: { authorization: `Bearer ${key}` },
    };
    await runWrk({ ...options, seconds: 2 });
    for (let i = 0; i < REPEATS; i++) runs.push(await runWrk({ ...options, seconds: SECONDS }));
    results.push([label, medianOf(runs)]);
    await service.stop();
  }
} finally {
  await stopAll();
  await upstream.close();
  const client = new pg.Client({ connectionString: POSTGRES });
  await client.connect();
  await client.query(`drop schema if exists "${schema}" cascade`);
  await client.end();
}

const base = results[0]![1].rps;
console.log(`\nAPI key, POST ${CHAT_PATH}, wrk -t2 -c32, ${SECONDS} s × ${REPEATS}, median\n`);
console.log('| Backend | req/s | p50 ms | p99 ms | × SQLite | failed |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const [label, run] of results) {
  const failed = run.non2xx + run.socketErrors;
  console.log(
    `| ${label} | ${Math.round(run.rps).toLocaleString('en-US')} | ${run.p50Ms.toFixed(2)} | ${run.p99Ms.toFixed(2)} | ${(run.rps / base).toFixed(2)}× | ${failed} |`,
  );
}
