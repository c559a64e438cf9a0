/**
 * What budgets cost on the API-key path: the same request through the same build without budgets
 * and with a per-user budget and a price for the model (never reached, so every request is
 * admitted, reserved and settled). A row and the row it is compared with run side by side: in
 * every round each group of rows (no budgets, the control and budgets on SQLite; the same pair on
 * Redis; on PostgreSQL) is started afresh, warmed up for 2 s and measured at once, each row loaded
 * by its own h2load at the same fixed rate, so a slow spell of this shared machine hits both
 * sides of a ratio alike. Reports the CPU each gateway spent per request (from /proc) as a ratio
 * to the row without budgets of its group, per round and as the median. A control row, the
 * gateway without budgets again, shows what the comparison gives with nothing to find: the noise
 * of the method. Target: within 10 %.
 *
 *   apt-get install nghttp2-client
 *   npm run build && node --import tsx bench/budgets.ts
 *
 * BENCH_SECONDS (default 5) per run, BENCH_REPEATS (default 10) rounds, BENCH_RATE (default 1500)
 * requests/s to each row; BENCH_REDIS=redis://… also measures the budget counters shared through
 * Redis, against the same Redis gateway without budgets (Redis also holds its rate-limit windows,
 * which are not the budgets' cost); BENCH_POSTGRES=postgres://… the same with the counters (and
 * everything else) in PostgreSQL, each row in a schema of its own, dropped at the end;
 * BENCH_CPU_PROF=<dir> has each gateway write a V8 CPU profile into <dir>/row-N when it stops.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startKeyGateway, type KeyGateway } from './lib/gateway-rows.js';
import { startJsonUpstream } from './lib/nginx.js';
import { cpuTimeOf, stopAll } from './lib/processes.js';
import { median } from './lib/stats.js';
import { cpuPerRequestSideBySide, hasH2load, writeChatBody } from './lib/h2load.js';
import { CHAT_PATH } from './lib/wrk.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 10);
const RATE = Number(process.env.BENCH_RATE ?? 1500);
const CONNECTIONS = 32;

const budgets = {
  prices: { 'demo-small': { input: 0.15, output: 0.6 } },
  per_user: { tokens: 1_000_000_000_000, period: 'month' },
};
/** Each row's ratios are to its `base` row: the same gateway without budgets. */
const rows: Array<{ label: string; config: Record<string, unknown>; base: number }> = [
  { label: 'no budgets', config: {}, base: 0 },
  { label: 'no budgets again (control)', config: {}, base: 0 },
  { label: 'budgets (SQLite, in memory)', config: { budgets }, base: 0 },
];
if (process.env.BENCH_REDIS) {
  const redis = { url: process.env.BENCH_REDIS, key_prefix: `bench-budgets-${process.pid}:` };
  rows.push({ label: 'no budgets (Redis)', config: { redis }, base: 3 });
  rows.push({ label: 'budgets (Redis)', config: { budgets, redis }, base: 3 });
}
const schemas: string[] = [];
if (process.env.BENCH_POSTGRES) {
  const base = rows.length;
  for (const [label, extra] of [
    ['no budgets (PostgreSQL)', {}],
    ['budgets (PostgreSQL)', { budgets }],
  ] as const) {
    const schema = `bench_budgets_${process.pid}_${schemas.length}`;
    schemas.push(schema);
    rows.push({ label, config: { ...extra, database: { url: process.env.BENCH_POSTGRES, schema } }, base });
  }
}
const profiles = process.env.BENCH_CPU_PROF;

if (!hasH2load()) {
  console.error('bench:budgets needs h2load: apt-get install nghttp2-client');
  process.exit(1);
}
const work = mkdtempSync(join(tmpdir(), 'gatehouse-budgets-'));
const logs = join(work, 'logs');
mkdirSync(logs);
const body = writeChatBody(work);
const upstream = await startJsonUpstream();
try {
  const measured = rows.map((row) => ({ ...row, cpu: [] as number[] }));
  const start = (index: number): Promise<KeyGateway> =>
    startKeyGateway({
      name: `row-${index}`,
      dist: 'dist',
      nodeFlags: profiles ? ['--cpu-prof', `--cpu-prof-dir=${join(profiles, `row-${index}`)}`] : [],
      work,
      logs,
      upstream: upstream.url,
      configEdits: {
        ...rows[index]!.config,
        auth: { failed_auth_per_minute: 0 },
        gateway: { log_level: 'warn', access_log: false },
      },
    });
  // Rows compared with one base are measured together; groups take turns going first.
  const groups = [...new Set(rows.map((row) => row.base))].map((base) =>
    measured.flatMap((row, index) => (row.base === base ? [index] : [])),
  );
  // A fresh process per row and round: how V8 happens to compile one process's hot path moved its
  // CPU per request by 30-50 % between processes, so one process per row measured that, not the budgets.
  for (let round = 0; round < REPEATS; round++) {
    const order = round % 2 === 1 ? [...groups].reverse() : groups;
    for (const members of order) {
      // Rows take turns at each place in the group, so none is always started and loaded first.
      const group = members.map((_, place) => members[(place + round) % members.length]!);
      const gateways = await Promise.all(group.map(start));
      try {
        const runs = await cpuPerRequestSideBySide(
          gateways.map((gateway) => ({
            url: `${gateway.url}${CHAT_PATH}`,
            headers: { authorization: `Bearer ${gateway.key}` },
            cpuMs: () => {
              const { userMs, systemMs } = cpuTimeOf(gateway.service.pid);
              return userMs + systemMs;
            },
          })),
          { connections: CONNECTIONS, rate: RATE, seconds: SECONDS, body },
        );
        for (const [position, { cpuUs, run }] of runs.entries()) {
          const row = measured[group[position]!]!;
          if (run.failed > 0) throw new Error(`${row.label}: ${run.failed} requests failed`);
          if (run.succeeded < RATE * SECONDS * 0.98) {
            throw new Error(`${row.label}: served ${run.succeeded} of ${RATE * SECONDS}; lower BENCH_RATE`);
          }
          row.cpu.push(cpuUs);
        }
      } finally {
        await Promise.all(gateways.map((gateway) => gateway.service.stop()));
      }
    }
  }
  console.log(
    `\nBudgets on the API-key path: POST ${CHAT_PATH}, h2load at ${RATE.toLocaleString('en-US')} requests/s over ${CONNECTIONS} connections to each row, the rows of a group side by side, ${SECONDS} s × ${REPEATS} rounds, medians\n`,
  );
  console.log('| Row | CPU µs/request | × no budgets (median of the rounds) | CPU × no budgets, each round |');
  console.log('| --- | --- | --- | --- |');
  for (const row of measured) {
    const base = measured[row.base]!;
    // Each round's ratio is of two processes measured side by side; across rounds the machine varies.
    const ratios = row.cpu.map((value, round) => value / base.cpu[round]!);
    const perRound = ratios.map((ratio) => ratio.toFixed(2)).join(', ');
    console.log(`| ${row.label} | ${median(row.cpu).toFixed(0)} | ${median(ratios).toFixed(3)}× | ${perRound} |`);
  }
} finally {
  await stopAll();
  await upstream.close();
  if (schemas.length) {
    const client = new pg.Client(process.env.BENCH_POSTGRES);
    await client.connect();
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  }
}
