/**
 * The 10,000-stream section of `npm run bench` alone, for Gatehouse builds side by side: each round
 * measures the streams straight to the upstream, then through each build (a fresh one-worker
 * process each time), so a before/after of a memory change takes minutes, not the full bench.
 *
 *   bash -c 'ulimit -n $(ulimit -Hn) && node --import tsx bench/streams.ts before=tmp/before/dist after=dist'
 *
 * BENCH_REPEATS (default 2) rounds. Prints RSS idle / all open / peak, KB per stream over idle and
 * the added chunk delay p99 of each build in each round, and of the Node floor measured before it.
 */
import { freePort } from '../test/support/ports.js';
import { startProcess, stopAll, waitForStatus } from './lib/processes.js';
import { kbPerStream, measureStreamScale, type StreamMemory } from './lib/scaling.js';
import { makeRunDirs, requireBuilds } from './lib/contenders.js';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 2);
const builds = process.argv.slice(2).map((argument) => {
  const [label, dist] = argument.split('=');
  if (!label || !dist) throw new Error(`expected label=path/to/dist, got "${argument}"`);
  return { label, dist };
});
requireBuilds(builds, 'node --import tsx bench/streams.ts');
const { work, logs } = makeRunDirs('streams');
const ssePort = await freePort();
const sse = startProcess('sse-upstream', process.execPath, ['bench/upstreams/sse.js'], {
  logDir: logs,
  env: { PORT: String(ssePort) },
});
const sseUpstream = `http://127.0.0.1:${ssePort}`;
await waitForStatus(`${sseUpstream}/stats`, sse);
const openFiles = Number(process.env.BENCH_OPEN_FILES ?? 20_000);
const rows: string[] = [];

/** One server's line of the table: its memory, and its chunk delay p99 over the direct streams'. */
function row(round: number, label: string, held: StreamMemory & { opened: number; p99: number }, directP99: number) {
  return (
    `| ${round} | ${label} | ${held.opened} | ${held.idleRssMb.toFixed(1)} | ${held.rssAllOpenMb.toFixed(1)} | ` +
    `${held.peakMb.toFixed(1)} | ${((held.peakMb * 1024 * 1024) / 1e6).toFixed(1)} | ${kbPerStream(held).toFixed(1)} | ` +
    `${directP99.toFixed(2)} | ${(held.p99 - directP99).toFixed(2)} |`
  );
}
try {
  for (let round = 1; round <= REPEATS; round++) {
    for (const { label, dist } of builds) {
      const scale = await measureStreamScale({ dirs: { work, logs }, sseUpstream, say: console.log, openFiles, dist });
      const directP99 = scale.direct.p99;
      rows.push(row(round, label, { ...scale, p99: scale.gatehouse.p99 }, directP99));
      if (scale.floor) rows.push(row(round, 'Node floor', scale.floor, directP99));
    }
  }
} finally {
  await stopAll();
}
console.log(
  '\n| Round | Build | streams | RSS idle MiB | all open MiB | peak MiB | peak MB | KB/stream | direct p99 ms | added p99 ms |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const row of rows) console.log(row);
