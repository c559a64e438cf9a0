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
import { kbPerStream, measureStreamScale } from './lib/scaling.js';
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
try {
  for (let round = 1; round <= REPEATS; round++) {
    for (const { label, dist } of builds) {
      const scale = await measureStreamScale({ dirs: { work, logs }, sseUpstream, say: console.log, openFiles, dist });
      const { floor } = scale;
      rows.push(
        `| ${round} | ${label} | ${scale.opened} | ${scale.idleRssMb.toFixed(1)} | ${scale.rssAllOpenMb.toFixed(1)} | ` +
          `${scale.peakMb.toFixed(1)} | ${((scale.peakMb * 1024 * 1024) / 1e6).toFixed(1)} | ${kbPerStream(scale).toFixed(1)} | ` +
          `${scale.direct.p99.toFixed(2)} | ${(scale.gatehouse.p99 - scale.direct.p99).toFixed(2)} |`,
        `| ${round} | Node floor | ${floor.opened} | ${floor.idleRssMb.toFixed(1)} | ${floor.rssAllOpenMb.toFixed(1)} | ` +
          `${floor.peakMb.toFixed(1)} | ${((floor.peakMb * 1024 * 1024) / 1e6).toFixed(1)} | ${kbPerStream(floor).toFixed(1)} | ` +
          `${scale.direct.p99.toFixed(2)} | ${(floor.p99 - scale.direct.p99).toFixed(2)} |`,
      );
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
