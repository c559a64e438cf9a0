/**
 * `npm run bench`: Gatehouse side by side with its anchors, in one run on this machine.
 *
 * 1. Requests: the same `POST /v1/chat/completions` through each contender to nginx answering a
 *    fixed completion, with wrk at each connection count (bench/README.md describes every row).
 * 2. Streaming: per-chunk delay and disconnect propagation against a Node SSE upstream; 1,000
 *    streams held open through Gatehouse for its peak RSS; start-to-ready time.
 * 3. API-key verification in-process (bench/keys.ts).
 * 4. CPU profiles of Gatehouse during an API-key run and from start to ready (BENCH_PROFILE=0 skips them).
 *
 * BENCH_SECONDS (default 10) and BENCH_REPEATS (default 3) set each wrk run; BENCH_SECONDS=3
 * BENCH_REPEATS=1 is the quick mode. Everything listens on 127.0.0.1 and every load stops by itself.
 * Results: bench/results/latest.md (printed too) and latest.json; `--render` rewrites latest.md from
 * latest.json without measuring.
 */
import { execFile, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as prettier from 'prettier';
import { GatehouseError } from '../src/errors.js';
import { hasNginx } from '../test/support/nginx.js';
import { freePort } from '../test/support/ports.js';
import {
  direct,
  expressKeyPeer,
  expressOidcPeer,
  gatehouse,
  gatehouseForwardAuth,
  nginxProxy,
  prepareGatehouse,
  writePeerKeys,
  type Contender,
  type GatehouseBench,
  type RunDirs,
} from './lib/contenders.js';
import { startJsonUpstream } from './lib/nginx.js';
import { memoryOf, ROOT, startProcess, stopAll, waitForStatus, type Service } from './lib/processes.js';
import { summariseProfile } from './lib/profile.js';
import {
  CONTENDERS,
  renderMarkdown,
  summariseDelays,
  targetsOf,
  type ContenderId,
  type Profiles,
  type Results,
  type StreamingRow,
  type ThroughputRow,
  type VerificationRates,
} from './lib/report.js';
import { measureCpuAtRate, measureCpuPerRequest, measureStreamScale, type StreamScale } from './lib/scaling.js';
import { hasH2load } from './lib/h2load.js';
import { chunkDelays, disconnectDelays, holdStreams, type StreamTarget } from './lib/sse.js';
import { median } from './lib/stats.js';
import { CHAT_BODY, CHAT_PATH, medianOf, runWrk, writeChatScript, type WrkRun } from './lib/wrk.js';

const SECONDS = positive('BENCH_SECONDS', 10);
const REPEATS = positive('BENCH_REPEATS', 3);
const WARMUP_SECONDS = Math.min(2, SECONDS);
const CONNECTIONS = [32, 256];
const PROFILE = process.env.BENCH_PROFILE !== '0';
const STARTS = 3;
const STREAMS = { streams: 20, rounds: 3, chunks: 20, delayMs: 10, disconnectSamples: 20 };
/** 20 chunks 500 ms apart: all 1,000 streams are open at once for several seconds. */
const HELD = { count: 1_000, chunks: 20, delayMs: 500, openingAtOnce: 100 };
const RESULTS_DIR = join(ROOT, 'bench', 'results');
/** 10,000 streams take 10,000 sockets in the client and the upstream and 20,000 in the gateway. */
const OPEN_FILES = 65_536;
/** BENCH_SCALE=0 skips the CPU-per-request rounds and the 10,000 streams. */
const SCALE = process.env.BENCH_SCALE !== '0';
/** Above this share of the cores busy before the run, the results carry a warning. */
const BUSY_WARNING_PERCENT = 10;

function positive(name: string, fallback: number): number {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value < 1) {
    console.error(`${name} must be a whole number of 1 or more (got ${process.env[name]})`);
    process.exit(1);
  }
  return value;
}

const began = performance.now();
function say(line: string): void {
  console.log(`[${((performance.now() - began) / 1000).toFixed(0).padStart(4)} s] ${line}`);
}

async function checkTools(): Promise<void> {
  const missing = [
    !existsSync('/usr/bin/wrk') && 'wrk',
    !hasH2load() && 'h2load',
    !(await hasNginx()) && 'nginx (with auth_request)',
  ].filter(Boolean);
  if (missing.length) {
    console.error(`The bench needs ${missing.join(', ')}: apt-get install nginx-light wrk nghttp2-client`);
    process.exit(1);
  }
  if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
    console.error('dist/cli.js is missing: run `npm run build` (npm run bench does it first)');
    process.exit(1);
  }
}

function machine(): Omit<Results['meta'], 'busyBeforePercent' | 'loadAverageAtEnd'> {
  /** stdout and stderr together: nginx and wrk print their versions on stderr. */
  const output = (command: string, args: string[]) => {
    const { stdout = '', stderr = '' } = spawnSync(command, args, { encoding: 'utf8', cwd: ROOT });
    return `${stdout}${stderr}`.trim();
  };
  const dirty = output('git', ['status', '--porcelain', '--', 'src']) ? ' + uncommitted src changes' : '';
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    // BENCH_COMMIT names the source when the bench runs outside a git checkout (an exported tree).
    commit: process.env.BENCH_COMMIT ?? `${output('git', ['rev-parse', '--short', 'HEAD'])}${dirty}`,
    cpu: cpus()[0]?.model ?? 'unknown CPU',
    cores: cpus().length,
    node: process.version,
    nginx: /nginx\/\S+/.exec(output('/usr/sbin/nginx', ['-v']))?.[0] ?? 'nginx',
    wrk: `wrk ${/^wrk (\S+)/m.exec(output('wrk', ['-v']))?.[1] ?? ''}`.trim(),
    seconds: SECONDS,
    repeats: REPEATS,
    warmupSeconds: WARMUP_SECONDS,
    connections: CONNECTIONS,
  };
}

/** A request with the contender's credentials must be served, and one without them refused. */
async function assertServes(id: ContenderId, contender: Contender): Promise<void> {
  const post = (headers: Record<string, string>) =>
    fetch(`${contender.url}${CHAT_PATH}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: CHAT_BODY,
      redirect: 'manual',
    });
  const served = await post(contender.headers);
  const text = await served.text();
  if (served.status !== 200 || !text.includes('chatcmpl-bench')) {
    throw new GatehouseError(
      'BENCH_NOT_SERVED',
      `${id} did not serve the completion: HTTP ${served.status} ${text.slice(0, 200)}`,
    );
  }
  if (contender.deniedStatus === undefined) return;
  const refused = await post({});
  await refused.arrayBuffer();
  if (refused.status !== contender.deniedStatus) {
    throw new GatehouseError(
      'BENCH_NOT_REFUSED',
      `${id} answered ${refused.status} without credentials, expected ${contender.deniedStatus}: authentication is off`,
    );
  }
}

async function throughput(id: ContenderId, start: () => Promise<Contender>, script: string): Promise<ThroughputRow[]> {
  const contender = await start();
  const rows: ThroughputRow[] = [];
  try {
    await assertServes(id, contender);
    for (const connections of CONNECTIONS) {
      const options = { url: `${contender.url}${CHAT_PATH}`, connections, headers: contender.headers, script };
      await runWrk({ ...options, seconds: WARMUP_SECONDS });
      const runs: WrkRun[] = [];
      for (let repeat = 0; repeat < REPEATS; repeat++) runs.push(await runWrk({ ...options, seconds: SECONDS }));
      const result = medianOf(runs);
      rows.push({ id, connections, result, runs });
      const failed = result.non2xx + result.socketErrors;
      say(
        `${CONTENDERS[id].label}, ${connections} conns: ${Math.round(result.rps).toLocaleString('en-US')} req/s, ` +
          `p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms${failed ? `, ${failed} FAILED` : ''}`,
      );
    }
    await assertServes(id, contender);
  } finally {
    await contender.stop();
  }
  return rows;
}

async function streaming(id: ContenderId, target: StreamTarget, upstream: string): Promise<StreamingRow> {
  const delays = await chunkDelays(target, STREAMS);
  const disconnects = await disconnectDelays(target, upstream, STREAMS.disconnectSamples);
  say(
    `${CONTENDERS[id].label}, SSE: chunk delay p50 ${median(delays).toFixed(3)} ms; ` +
      `disconnect seen by upstream after ${median(disconnects).toFixed(1)} ms (median), ${Math.max(...disconnects).toFixed(1)} ms (max)`,
  );
  return { id, chunkDelay: summariseDelays(delays), disconnects };
}

async function nodeStartMs(): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 3; i++) {
    const start = performance.now();
    await promisify(execFile)(process.execPath, ['-e', '0']);
    samples.push(performance.now() - start);
  }
  return median(samples);
}

async function verificationRates(): Promise<VerificationRates> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/keys.ts', '--json'], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, BENCH_SECONDS: String(Math.min(SECONDS, 3)) },
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as VerificationRates;
}

/**
 * Gatehouse in front of the SSE upstream: start to ready (several starts), then on the last process
 * chunk delay and disconnect, then 1,000 streams held open for its memory.
 */
async function gatehouseProcess(bench: GatehouseBench, sseUpstream: string) {
  const config = bench.writeConfig('sse', sseUpstream);
  const readyMs: number[] = [];
  let last: Awaited<ReturnType<GatehouseBench['start']>> | undefined;
  for (let i = 0; i < STARTS; i++) {
    await last?.service.stop();
    last = await bench.start(`gatehouse-sse-${i + 1}`, config);
    readyMs.push(last.readyMs);
  }
  const { service } = last!;
  say(`Gatehouse start to /readyz 200: ${readyMs.map((v) => Math.round(v)).join(', ')} ms`);
  try {
    const idleRssMb = memoryOf(service.pid).rssMb;
    const target = { url: bench.website, headers: { authorization: `Bearer ${bench.apiKey}` } };
    const row = await streaming('gatehouse-key', target, sseUpstream);
    let rssAllOpenMb = NaN;
    const held = await holdStreams(target, { ...HELD, onAllOpen: () => (rssAllOpenMb = memoryOf(service.pid).rssMb) });
    const { peakMb } = memoryOf(service.pid);
    say(
      `${held.opened} of ${HELD.count} SSE streams open through Gatehouse after ${Math.round(held.allOpenAfterMs)} ms: ` +
        `RSS ${rssAllOpenMb.toFixed(1)} MiB (idle ${idleRssMb.toFixed(1)}), peak ${peakMb.toFixed(1)} MiB` +
        (held.failures.length ? `; ${held.failures.length} failed: ${held.failures[0]}` : ''),
    );
    return {
      row,
      process: {
        readyMs,
        nodeStartMs: await nodeStartMs(),
        idleRssMb,
        streams: { ...held, count: HELD.count, chunks: HELD.chunks, delayMs: HELD.delayMs, rssAllOpenMb, peakMb },
      },
    };
  } finally {
    await service.stop();
  }
}

/** Moves the one profile a process wrote in `dir` to bench/results/`name`.cpuprofile. */
function keepProfile(dir: string, name: string, service: Service): string {
  const written = readdirSync(dir).find((file) => file.endsWith('.cpuprofile'));
  if (!written)
    throw new GatehouseError('BENCH_NO_PROFILE', `Gatehouse wrote no CPU profile into ${dir}; ${service.logPath}`);
  const file = join('bench', 'results', `${name}.cpuprofile`);
  renameSync(join(dir, written), join(ROOT, file));
  return file;
}

/** `node --cpu-prof` on Gatehouse: one process through an API-key run at 32 connections, one from start to ready. */
async function profiles(bench: GatehouseBench, jsonUpstream: string, script: string, dirs: RunDirs): Promise<Profiles> {
  const config = bench.writeConfig('profile', jsonUpstream);
  const apiKeyDir = join(dirs.work, 'profile-api-key');
  const profiled = await bench.start('gatehouse-profile-api-key', config, { cpuProfDir: apiKeyDir });
  let rps: number;
  try {
    const options = {
      url: `${bench.website}${CHAT_PATH}`,
      connections: 32,
      headers: { authorization: `Bearer ${bench.apiKey}` },
      script,
    };
    await runWrk({ ...options, seconds: WARMUP_SECONDS });
    ({ rps } = await runWrk({ ...options, seconds: SECONDS }));
  } finally {
    await profiled.service.stop();
  }
  const apiKeyFile = keepProfile(apiKeyDir, 'gatehouse-api-key', profiled.service);
  say(
    `profile of the API-key run: ${apiKeyFile} (${Math.round(rps).toLocaleString('en-US')} req/s under the profiler)`,
  );

  const startupDir = join(dirs.work, 'profile-startup');
  const started = await bench.start('gatehouse-profile-startup', config, { cpuProfDir: startupDir });
  await started.service.stop();
  const startupFile = keepProfile(startupDir, 'gatehouse-startup', started.service);
  say(`profile of a start: ${startupFile} (ready after ${Math.round(started.readyMs)} ms under the profiler)`);
  return {
    apiKey: { file: apiKeyFile, rps, summary: summariseProfile(join(ROOT, apiKeyFile)) },
    startup: { file: startupFile, readyMs: started.readyMs, summary: summariseProfile(join(ROOT, startupFile)) },
  };
}

/** Share of both cores busy over one second before the bench starts: other work skews every figure. */
async function machineBusyPercent(): Promise<number> {
  const sample = () => {
    const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
    const ticks = fields.map(Number);
    const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
    return { idle, total: ticks.slice(0, 8).reduce((sum, n) => sum + n, 0) };
  };
  const before = sample();
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const after = sample();
  return 100 * (1 - (after.idle - before.idle) / Math.max(1, after.total - before.total));
}

/**
 * The bench's processes (this one, the upstreams, Gatehouse) need more open files than a shell
 * usually allows: the bench starts itself again under `ulimit -n` raised as far as the hard limit
 * lets it, so the product never raises it. Returns the limit its processes run with.
 */
function withOpenFiles(): number {
  const limit = (flag: string) =>
    Number(spawnSync('bash', ['-c', `ulimit ${flag}`], { encoding: 'utf8' }).stdout.trim()) || 1024;
  const [soft, hard] = [limit('-Sn'), limit('-Hn')];
  const wanted = Math.min(OPEN_FILES, hard);
  if (!SCALE || soft >= wanted || process.env.BENCH_OPEN_FILES_RAISED) return soft;
  const command = [process.execPath, ...process.execArgv, ...process.argv.slice(1)].map((arg) => `'${arg}'`).join(' ');
  const again = spawnSync('bash', ['-c', `ulimit -n ${wanted} && exec ${command}`], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_OPEN_FILES_RAISED: '1' },
  });
  process.exit(again.status ?? 1);
}

async function main(): Promise<void> {
  const openFiles = withOpenFiles();
  await checkTools();
  const busyBeforePercent = await machineBusyPercent();
  if (busyBeforePercent > BUSY_WARNING_PERCENT) {
    say(
      `WARNING: the machine was ${busyBeforePercent.toFixed(0)}% busy before the bench started; ` +
        'other processes share the cores with the servers under test, so every figure is lower and noisier.',
    );
  }
  const estimate =
    CONNECTIONS.length * 7 * (WARMUP_SECONDS + SECONDS * REPEATS) + 60 + (PROFILE ? SECONDS + WARMUP_SECONDS : 0);
  say(`BENCH_SECONDS=${SECONDS} BENCH_REPEATS=${REPEATS}: about ${Math.ceil(estimate / 60)} minutes`);
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-bench-'));
  const dirs: RunDirs = { work, logs: join(work, 'logs') };
  mkdirSync(dirs.logs);
  say(`logs of every process: ${dirs.logs}`);
  const cleanups: Array<() => Promise<unknown>> = [];
  let failed = false;
  const interrupt = () => {
    console.error('interrupted: stopping every process the bench started');
    void Promise.allSettled([stopAll(), ...cleanups.map((c) => c())]).then(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);

  try {
    const script = writeChatScript(work);
    const jsonUpstream = await startJsonUpstream();
    cleanups.push(() => jsonUpstream.close());
    const ssePort = await freePort();
    const sseService = startProcess('sse-upstream', process.execPath, ['bench/upstreams/sse.js'], {
      logDir: dirs.logs,
      env: { PORT: String(ssePort) },
    });
    const sseUpstream = `http://127.0.0.1:${ssePort}`;
    await waitForStatus(`${sseUpstream}/stats`, sseService);

    const bench = await prepareGatehouse(dirs, jsonUpstream.url);
    cleanups.push(() => bench.close());
    const keysDb = writePeerKeys(dirs, bench.apiKey);
    const jsonConfig = bench.writeConfig('json', jsonUpstream.url);
    say('upstreams, Gatehouse (API key and session) and the peers are set up; measuring requests');

    const upstream = jsonUpstream.url;
    const scenarios: Array<[ContenderId, () => Promise<Contender>]> = [
      ['direct', async () => direct(upstream)],
      ['nginx-proxy', () => nginxProxy(upstream)],
      ['express-key', () => expressKeyPeer(dirs, upstream, keysDb, bench.apiKey)],
      ['express-oidc', () => expressOidcPeer(dirs, upstream)],
      [
        'gatehouse-key',
        () => gatehouse(bench, 'gatehouse-key', jsonConfig, { authorization: `Bearer ${bench.apiKey}` }),
      ],
      [
        'gatehouse-session',
        () => gatehouse(bench, 'gatehouse-session', jsonConfig, { cookie: bench.sessionCookie, origin: bench.website }),
      ],
      ['gatehouse-forward-auth', () => gatehouseForwardAuth(bench, upstream)],
    ];
    const throughputRows: ThroughputRow[] = [];
    for (const [id, start] of scenarios) throughputRows.push(...(await throughput(id, start, script)));

    const cpuRows = SCALE
      ? await measureCpuPerRequest({ dirs, upstream, script, seconds: SECONDS, rounds: REPEATS, say })
      : undefined;
    const atRate = SCALE
      ? await measureCpuAtRate({ dirs, upstream, seconds: Math.min(5, SECONDS), rounds: 2 * REPEATS, rate: 3_000, say })
      : undefined;

    say('measuring streams');
    const streamingRows: StreamingRow[] = [];
    streamingRows.push(await streaming('direct', direct(sseUpstream), sseUpstream));
    for (const [id, start] of [
      ['nginx-proxy', () => nginxProxy(sseUpstream)],
      ['express-key', () => expressKeyPeer(dirs, sseUpstream, keysDb, bench.apiKey)],
    ] as Array<[ContenderId, () => Promise<Contender>]>) {
      const contender = await start();
      try {
        streamingRows.push(await streaming(id, contender, sseUpstream));
      } finally {
        await contender.stop();
      }
    }
    const gatehouseFigures = await gatehouseProcess(bench, sseUpstream);
    streamingRows.push(gatehouseFigures.row);
    let streamScale: StreamScale | undefined;
    if (SCALE) {
      say(
        `holding up to 10,000 streams open (open files: ${openFiles}), straight to the upstream and then through one Gatehouse worker`,
      );
      streamScale = await measureStreamScale({ dirs, sseUpstream, say, openFiles });
    }
    await sseService.stop();

    say('measuring key verification in-process');
    const verification = await verificationRates();
    say(
      `cached ${Math.round(verification.cached).toLocaleString('en-US')}/s, uncached ${Math.round(verification.uncached).toLocaleString('en-US')}/s`,
    );

    const profile = PROFILE ? await profiles(bench, jsonUpstream.url, script, dirs) : undefined;

    const results: Results = {
      meta: {
        ...machine(),
        busyBeforePercent,
        loadAverageAtEnd: loadavg()[0] ?? NaN,
        durationS: (performance.now() - began) / 1000,
      },
      throughput: throughputRows,
      streaming: streamingRows,
      streamSettings: STREAMS,
      process: gatehouseFigures.process,
      verification,
      profile,
      scaling: cpuRows && { seconds: SECONDS, rounds: REPEATS, cpu: cpuRows, atRate, streams: streamScale },
    };
    await writeResults(results);
  } catch (error) {
    failed = true;
    console.error(`\nbench failed: ${(error as Error).stack ?? error}\nlogs: ${dirs.logs}`);
  } finally {
    await stopAll();
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    if (!failed) rmSync(work, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
}

async function writeResults(results: Results, { withJson = true } = {}): Promise<void> {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const options = (await prettier.resolveConfig(join(RESULTS_DIR, 'latest.md'))) ?? {};
  const markdown = await prettier.format(renderMarkdown(results), { ...options, parser: 'markdown' });
  writeFileSync(join(RESULTS_DIR, 'latest.md'), markdown);
  console.log(`\n${markdown}`);
  const failing = targetsOf(results).filter((target) => target.ok === false).length;
  if (!withJson) return;
  const json = JSON.stringify(
    results,
    (key, value: unknown) => {
      if (value === Infinity) return 'Infinity';
      if (key === 'failures' && Array.isArray(value)) return value.slice(0, 10);
      return value;
    },
    2,
  );
  writeFileSync(join(RESULTS_DIR, 'latest.json'), await prettier.format(json, { ...options, parser: 'json' }));
  say(`written to bench/results/latest.md and latest.json; ${failing} target${failing === 1 ? '' : 's'} not met`);
}

/** `--render`: rewrites latest.md from latest.json, after a change to the report's layout. */
async function render(): Promise<void> {
  const text = readFileSync(join(RESULTS_DIR, 'latest.json'), 'utf8');
  const results = JSON.parse(text, (_key, value: unknown) => (value === 'Infinity' ? Infinity : value)) as Results;
  await writeResults(results, { withJson: false });
}

await (process.argv.includes('--render') ? render() : main());
