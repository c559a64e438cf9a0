/**
 * Compares Gatehouse builds on the API-key path, interleaved in one run with nginx as a plain proxy,
 * the Node floor (node:http + undici) and the Express key peer: requests/s and the CPU each contender spends per request. For
 * before/after figures of a change: build, copy `dist` aside, change, build, compare both.
 *
 *   npm run build && mkdir -p tmp/before && cp -r dist tmp/before/   # inside the repo, so packages resolve
 *   (make the change) && npm run build && npm run bench:compare -- before=tmp/before/dist after=dist
 *
 * A build may carry Node flags after `@`, comma-separated: `semi8=dist@--max-semi-space-size=8`, and
 * config edits after `+`, as JSON: `quiet=dist+{"gateway":{"access_log":false}}`.
 *
 * Each build is started as `npx gatehouse serve` starts it (the Node flags of its shebang) on its own SQLite file with one key made by
 * `keys create`. BENCH_SECONDS (default 3) per run, BENCH_REPEATS (default 7) rounds; every round
 * runs each contender once, so a slow spell of a shared machine hits all of them alike. After the
 * rounds, each process's resident set now and its peak (VmHWM) are read from /proc.
 *
 * Node flags with and without: copy `dist` aside with a flagless shebang, and add each flag to it:
 *   cp -r dist tmp/bare && sed -i '1c #!/usr/bin/env node' tmp/bare/cli.js
 *   npm run bench:compare -- bare=tmp/bare semi8=tmp/bare@--max-semi-space-size=8 shipped=dist
 */
import { freePort } from '../test/support/ports.js';
import { makeRunDirs, requireBuilds, writePeerKeys } from './lib/contenders.js';
import { startKeyGateway } from './lib/gateway-rows.js';
import { bareFloor } from './lib/scaling.js';
import { startJsonUpstream, startNginxProxy } from './lib/nginx.js';
import { cpuTimeOf, memoryOf, startProcess, stopAll, waitForStatus } from './lib/processes.js';
import { median } from './lib/stats.js';
import { CHAT_PATH, runWrk, writeChatScript } from './lib/wrk.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 7);
const CONNECTIONS = 32;

interface Contender {
  label: string;
  url: string;
  headers: Record<string, string>;
  /** The process whose CPU is counted; nginx runs several, so it has none. */
  pid?: number;
}

const builds = process.argv.slice(2).map((argument) => {
  const [label, spec] = argument.split(/=(.*)/s);
  const [build, edits] = (spec ?? '').split(/\+(.*)/s);
  const [dist, flags] = (build ?? '').split('@');
  if (!label || !dist) throw new Error(`expected label=path/to/dist[@--node-flag,...][+{config}], got "${argument}"`);
  const configEdits = edits ? (JSON.parse(edits) as Record<string, unknown>) : {};
  return { label, dist, nodeFlags: flags ? flags.split(',') : [], configEdits };
});
requireBuilds(builds, 'npm run bench:compare --');
const { work, logs } = makeRunDirs('compare');
const script = writeChatScript(work);
const upstream = await startJsonUpstream();
const nginx = await startNginxProxy(upstream.url);
try {
  const contenders: Contender[] = [{ label: 'nginx proxy', url: nginx.url + CHAT_PATH, headers: {} }];
  contenders.push(await startPeer(), await startFloor());
  for (const build of builds) contenders.push(await startBuild(build));

  const rps = new Map<string, number[]>();
  const cpu = new Map<string, number[]>();
  const system = new Map<string, number[]>();
  const note = (map: Map<string, number[]>, label: string, value: number) =>
    map.set(label, [...(map.get(label) ?? []), value]);
  for (const contender of contenders) await load(contender, Math.min(2, SECONDS));
  for (let round = 0; round < REPEATS; round++) {
    for (const contender of contenders) {
      const before = contender.pid ? cpuTimeOf(contender.pid) : undefined;
      const run = await load(contender, SECONDS);
      note(rps, contender.label, run.rps);
      if (before && contender.pid) {
        const after = cpuTimeOf(contender.pid);
        const totalMs = after.userMs + after.systemMs - before.userMs - before.systemMs;
        note(cpu, contender.label, (totalMs * 1000) / run.requests);
        note(system, contender.label, (after.systemMs - before.systemMs) / totalMs);
      }
    }
  }

  const nginxRps = median(rps.get('nginx proxy')!);
  const peerRps = median(rps.get('express peer')!);
  const floorCpu = median(cpu.get('node floor')!);
  console.log(`\nPOST ${CHAT_PATH}, wrk -t2 -c${CONNECTIONS}, ${SECONDS} s × ${REPEATS} interleaved, medians\n`);
  console.log(
    '| Contender | req/s | × nginx proxy | × express peer | CPU µs/request | CPU × floor | kernel share | RSS MiB | peak RSS MiB |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const { label, pid } of contenders) {
    const value = median(rps.get(label)!);
    const perRequest = cpu.has(label) ? median(cpu.get(label)!).toFixed(0) : '—';
    const perFloor = cpu.has(label) ? `${(median(cpu.get(label)!) / floorCpu).toFixed(2)}×` : '—';
    const kernel = system.has(label) ? `${(100 * median(system.get(label)!)).toFixed(0)} %` : '—';
    const memory = pid ? memoryOf(pid) : undefined;
    const [rss, peak] = memory ? [memory.rssMb.toFixed(1), memory.peakMb.toFixed(1)] : ['—', '—'];
    console.log(
      `| ${label} | ${Math.round(value).toLocaleString('en-US')} | ${(value / nginxRps).toFixed(2)}× | ${(value / peerRps).toFixed(2)}× | ${perRequest} | ${perFloor} | ${kernel} | ${rss} | ${peak} |`,
    );
  }
} finally {
  await stopAll();
  await nginx.close();
  await upstream.close();
}

async function load(contender: Contender, seconds: number) {
  const run = await runWrk({
    url: contender.url,
    connections: CONNECTIONS,
    seconds,
    script,
    headers: contender.headers,
  });
  if (run.non2xx + run.socketErrors > 0) {
    throw new Error(`${contender.label}: ${run.non2xx} non-2xx answers and ${run.socketErrors} socket errors`);
  }
  return run;
}

async function startPeer(): Promise<Contender> {
  const port = await freePort();
  const key = `peer-${'k'.repeat(40)}`;
  const service = startProcess('express-peer', process.execPath, ['bench/peers/express-key.js'], {
    logDir: logs,
    env: { PORT: String(port), UPSTREAM: upstream.url, KEYS_DB: writePeerKeys({ work, logs }, key) },
  });
  await waitForStatus(`http://127.0.0.1:${port}/`, service, { status: 401 });
  return {
    label: 'express peer',
    url: `http://127.0.0.1:${port}${CHAT_PATH}`,
    headers: { authorization: `Bearer ${key}` },
    pid: service.pid,
  };
}

async function startFloor(): Promise<Contender> {
  const floor = await bareFloor({ work, logs }, upstream.url);
  return { label: 'node floor', url: floor.url + CHAT_PATH, headers: {}, pid: floor.pid };
}

async function startBuild({ label, dist, nodeFlags, configEdits }: (typeof builds)[number]): Promise<Contender> {
  const gateway = await startKeyGateway({
    name: label,
    dist,
    nodeFlags,
    configEdits,
    work,
    logs,
    upstream: upstream.url,
  });
  return {
    label,
    url: `${gateway.url}${CHAT_PATH}`,
    headers: { authorization: `Bearer ${gateway.key}` },
    pid: gateway.service.pid,
  };
}
