/**
 * What budgets cost on the API-key path: the same request through the same build without budgets
 * and with a per-user budget and a price for the model (never reached, so every request is
 * admitted, reserved and settled), in interleaved rounds so a slow spell of the shared machine hits
 * both alike, each row a fresh process in every round (warmed up for 2 s before it is measured). Reports requests/s and the CPU the gateway spent per request (from /proc), each as a
 * ratio to the run without budgets. Target: within 10 %.
 *
 *   npm run build && node --import tsx bench/budgets.ts
 *
 * BENCH_SECONDS (default 5) per run, BENCH_REPEATS (default 5) rounds; BENCH_REDIS=redis://… also
 * measures the budget counters shared through Redis, against the same Redis gateway without budgets
 * (Redis also holds its rate-limit windows, which are not the budgets' cost); BENCH_CPU_PROF=<dir>
 * has each gateway write a V8 CPU profile there when it stops.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startKeyGateway, type KeyGateway } from './lib/gateway-rows.js';
import { startJsonUpstream } from './lib/nginx.js';
import { cpuTimeOf, stopAll } from './lib/processes.js';
import { median } from './lib/stats.js';
import { CHAT_PATH, runWrk, writeChatScript } from './lib/wrk.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const CONNECTIONS = 32;

const budgets = {
  prices: { 'demo-small': { input: 0.15, output: 0.6 } },
  per_user: { tokens: 1_000_000_000_000, period: 'month' },
};
/** Each row's ratios are to its `base` row: the same gateway without budgets. */
const rows: Array<{ label: string; config: Record<string, unknown>; base: number }> = [
  { label: 'no budgets', config: {}, base: 0 },
  { label: 'budgets (SQLite, in memory)', config: { budgets }, base: 0 },
];
if (process.env.BENCH_REDIS) {
  const redis = { url: process.env.BENCH_REDIS, key_prefix: `bench-budgets-${process.pid}:` };
  rows.push({ label: 'no budgets (Redis)', config: { redis }, base: 2 });
  rows.push({ label: 'budgets (Redis)', config: { budgets, redis }, base: 2 });
}
const profiles = process.env.BENCH_CPU_PROF;

const work = mkdtempSync(join(tmpdir(), 'gatehouse-budgets-'));
const logs = join(work, 'logs');
mkdirSync(logs);
const script = writeChatScript(work);
const upstream = await startJsonUpstream();
try {
  const measured = rows.map((row) => ({ ...row, rps: [] as number[], cpu: [] as number[] }));
  const start = (index: number): Promise<KeyGateway> =>
    startKeyGateway({
      name: `row-${index}`,
      dist: 'dist',
      nodeFlags: profiles ? ['--cpu-prof', `--cpu-prof-dir=${profiles}`] : [],
      work,
      logs,
      upstream: upstream.url,
      configEdits: {
        ...rows[index]!.config,
        auth: { failed_auth_per_minute: 0 },
        gateway: { log_level: 'warn', access_log: false },
      },
    });
  const load = (gateway: KeyGateway, seconds: number) =>
    runWrk({
      url: `${gateway.url}${CHAT_PATH}`,
      connections: CONNECTIONS,
      seconds,
      script,
      headers: { authorization: `Bearer ${gateway.key}` },
    });
  // A fresh process per row and round: how V8 happens to compile one process's hot path moved its
  // CPU per request by 30-50 % between runs, so one process per row measured that, not the budgets.
  for (let round = 0; round < REPEATS; round++) {
    // Rows take turns going first, so neither always follows the other's load.
    const order = measured.map((_, index) => index);
    if (round % 2 === 1) order.reverse();
    for (const index of order) {
      const row = measured[index]!;
      const gateway = await start(index);
      try {
        await load(gateway, Math.min(2, SECONDS));
        const before = cpuTimeOf(gateway.service.pid);
        const run = await load(gateway, SECONDS);
        if (run.non2xx + run.socketErrors > 0) throw new Error(`${row.label}: ${run.non2xx} non-2xx answers`);
        const after = cpuTimeOf(gateway.service.pid);
        row.rps.push(run.rps);
        row.cpu.push(((after.userMs + after.systemMs - before.userMs - before.systemMs) * 1000) / run.requests);
      } finally {
        await gateway.service.stop();
      }
    }
  }
  console.log(
    `\nBudgets on the API-key path: POST ${CHAT_PATH}, wrk -t2 -c${CONNECTIONS}, ${SECONDS} s × ${REPEATS} interleaved, medians\n`,
  );
  console.log('| Row | req/s | × no budgets | CPU µs/request | × no budgets | CPU × no budgets, each round |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const row of measured) {
    const base = measured[row.base]!;
    const rps = median(row.rps);
    const cpu = median(row.cpu);
    const perRound = row.cpu.map((value, round) => (value / base.cpu[round]!).toFixed(2)).join(', ');
    console.log(
      `| ${row.label} | ${Math.round(rps).toLocaleString('en-US')} | ${(rps / median(base.rps)).toFixed(3)}× | ${cpu.toFixed(0)} | ${(cpu / median(base.cpu)).toFixed(3)}× | ${perRound} |`,
    );
  }
} finally {
  await stopAll();
  await upstream.close();
}
