/**
 * Memory of Gatehouse builds at light use: each is started on its own SQLite file, sent 200
 * sequential API-key requests, left idle for 3 s, and its resident set and peak (VmHWM) read from
 * /proc. Rounds interleave the builds, as in compare.ts, whose `label=dist[@--node-flag,...]`
 * arguments it takes:
 *
 *   node --import tsx bench/idle.ts bare=tmp/bare liftoff=tmp/bare@--liftoff-only shipped=dist
 *
 * BENCH_REPEATS (default 3) rounds.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { startKeyGateway } from './lib/gateway-rows.js';
import { startJsonUpstream } from './lib/nginx.js';
import { memoryOf, stopAll } from './lib/processes.js';
import { CHAT_BODY, CHAT_PATH } from './lib/wrk.js';
import { makeRunDirs, requireBuilds } from './lib/contenders.js';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const REQUESTS = 200;
const IDLE_MS = 3_000;

const builds = process.argv.slice(2).map((argument) => {
  const [label, spec] = argument.split(/=(.*)/s);
  const [dist, flags] = (spec ?? '').split('@');
  if (!label || !dist) throw new Error(`expected label=path/to/dist[@--node-flag,...], got "${argument}"`);
  return { label, dist, nodeFlags: flags ? flags.split(',') : [] };
});
requireBuilds(builds, 'node --import tsx bench/idle.ts');
const { work, logs } = makeRunDirs('idle');
const upstream = await startJsonUpstream();
const measured = new Map<string, string[]>();
try {
  for (let round = 0; round < REPEATS; round++) {
    for (const { label, dist, nodeFlags } of builds) {
      const gateway = await startKeyGateway({
        name: `${label}-${round}`,
        dist,
        nodeFlags,
        work,
        logs,
        upstream: upstream.url,
      });
      for (let i = 0; i < REQUESTS; i++) {
        const response = await fetch(gateway.url + CHAT_PATH, {
          method: 'POST',
          headers: { authorization: `Bearer ${gateway.key}`, 'content-type': 'application/json' },
          body: CHAT_BODY,
        });
        await response.arrayBuffer();
      }
      await sleep(IDLE_MS);
      const { rssMb, peakMb } = memoryOf(gateway.service.pid);
      measured.set(label, [...(measured.get(label) ?? []), `${rssMb.toFixed(1)} / ${peakMb.toFixed(1)}`]);
      await gateway.service.stop();
    }
  }
} finally {
  await stopAll();
  await upstream.close();
}
console.log(`\nRSS / peak RSS (MiB) after ${REQUESTS} requests and ${IDLE_MS / 1000} s idle, one column per round\n`);
for (const [label, values] of measured) console.log(`| ${label} | ${values.join(' | ')} |`);
