/**
 * The figures of issue 18, measured in the same run as the rest of the bench:
 *
 * - CPU per request on the API-key path against the Node floor (bench/peers/bare-proxy.js), with
 *   Gatehouse at 1 and at 2 workers, nginx and the Express key peer, in interleaved rounds (each
 *   round runs every contender once, so a slow spell of the shared machine hits all alike);
 * - 10,000 SSE streams held open at once through one Gatehouse worker: peak RSS, KB per open stream
 *   over idle, and the chunk delay added against the same 10,000 streams straight to the upstream.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cliNodeFlags } from '../../test/support/cli.js';
import { freePort } from '../../test/support/ports.js';
import { expressKeyPeer, nginxProxy, writePeerKeys, type RunDirs } from './contenders.js';
import { startKeyGateway, type KeyGateway } from './gateway-rows.js';
import { cpuPerRequestSideBySide, writeChatBody } from './h2load.js';
import { cpuTimeOf, memoryOf, startProcess, waitForStatus, type Service } from './processes.js';
import { holdStreams, type HeldStreams } from './sse.js';
import { percentile, median } from './stats.js';
import { CHAT_PATH, runWrk } from './wrk.js';

export type ScalingId = 'nginx-proxy' | 'bare-floor' | 'gatehouse-1' | 'gatehouse-2' | 'express-key';

export const SCALING_LABELS: Record<ScalingId, string> = {
  'nginx-proxy': 'nginx reverse proxy, no auth',
  'bare-floor': 'Node floor: node:http + undici, no auth',
  'gatehouse-1': 'Gatehouse, API key, 1 worker',
  'gatehouse-2': 'Gatehouse, API key, 2 workers',
  'express-key': 'peer: Express 5 + http-proxy-middleware, API key',
};

export interface CpuRow {
  id: ScalingId;
  /** Median over the rounds. */
  rps: number;
  /** CPU (user + kernel) of the server's processes per request, median over the rounds; undefined for nginx. */
  cpuUs?: number;
  /** Each round's figures, for the spread. */
  rounds: Array<{ rps: number; cpuUs?: number }>;
}

/** CPU per request of the Node floor and of Gatehouse (one worker) at a fixed request rate. */
export interface CpuAtRate {
  rate: number;
  seconds: number;
  /** Medians over the rounds. */
  floorUs: number;
  gatehouseUs: number;
  rounds: Array<{ floorUs: number; gatehouseUs: number }>;
  /** Both measured at once in each round; results written before 2026-12-03 measured them one after the other. */
  sideBySide?: boolean;
}

/** A server's resident set (MiB) idle, with all streams open, and its peak. */
export interface StreamMemory {
  idleRssMb: number;
  rssAllOpenMb: number;
  peakMb: number;
}

export interface StreamScale extends StreamMemory {
  count: number;
  /** 10,000; `count` is lower where the open-files limit does not allow that many. */
  wanted: number;
  openFiles: number;
  chunks: number;
  delayMs: number;
  opened: number;
  failures: string[];
  /** Upstream write -> client read, p50 and p99, straight to the upstream and through Gatehouse. */
  direct: { p50: number; p99: number; opened: number };
  gatehouse: { p50: number; p99: number };
  /**
   * The same streams through the Node floor (node:http + undici, no authentication): what the
   * sockets, parsers and streams of a Node proxy hold per stream before any gateway work. Absent
   * from results written before it was measured.
   */
  floor?: StreamMemory & { opened: number; p99: number };
}

const CONNECTIONS = 32;

/** Every process of a server: the one spawned and its descendants (a primary's workers). */
function processTree(pid: number): number[] {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
  return [pid, ...children.flatMap(processTree)];
}

function cpuMsOfTree(pid: number): number {
  return processTree(pid).reduce((sum, each) => {
    const { userMs, systemMs } = cpuTimeOf(each);
    return sum + userMs + systemMs;
  }, 0);
}

interface Running {
  id: ScalingId;
  url: string;
  headers: Record<string, string>;
  pid?: number;
  stop(): Promise<unknown>;
}

/** The Node floor (bench/peers/bare-proxy.js): the least a Node proxy spends on a request. */
export async function bareFloor(
  dirs: RunDirs,
  upstream: string,
  options: {
    /** The most upstream connections at once: one per stream for SSE. */
    connections?: number;
    nodeFlags?: string[];
  } = {},
): Promise<Running> {
  const { connections = 512, nodeFlags = [] } = options;
  const port = await freePort();
  const service = startProcess('bare-floor', process.execPath, [...nodeFlags, 'bench/peers/bare-proxy.js'], {
    logDir: dirs.logs,
    env: { PORT: String(port), UPSTREAM: upstream, CONNECTIONS: String(connections) },
  });
  await waitForStatus(`http://127.0.0.1:${port}/`, service, { status: 200 });
  const url = `http://127.0.0.1:${port}`;
  return { id: 'bare-floor', url, headers: {}, pid: service.pid, stop: () => service.stop() };
}

/** Gatehouse from `dist` with its own database and key, the access log on (the default). */
async function gatehouseWorkers(dirs: RunDirs, upstream: string, workers: number, dist = 'dist'): Promise<KeyGateway> {
  const gateway = await startKeyGateway({
    name: `gatehouse-${workers}-worker${workers === 1 ? '' : 's'}`,
    dist,
    work: dirs.work,
    logs: dirs.logs,
    upstream,
    configEdits: { gateway: { workers } },
    readyTimeoutMs: 60_000,
  });
  // /healthz answers once one worker listens; wrk's connections stay with the workers listening
  // when it connects, so the load starts once all are.
  const deadline = performance.now() + 30_000;
  while (listeningWorkers(gateway.service) < workers && performance.now() < deadline) await sleep(50);
  return gateway;
}

function listeningWorkers(service: Service): number {
  return readFileSync(service.logPath, 'utf8').split('"msg":"gatehouse is listening"').length - 1;
}

export async function measureCpuPerRequest(options: {
  dirs: RunDirs;
  upstream: string;
  script: string;
  seconds: number;
  rounds: number;
  say(line: string): void;
}): Promise<CpuRow[]> {
  const { dirs, upstream, script, seconds, rounds, say } = options;
  const peerKey = `peer-${'s'.repeat(40)}`;
  const running: Running[] = [];
  try {
    const nginx = await nginxProxy(upstream);
    running.push({ id: 'nginx-proxy', url: nginx.url, headers: {}, stop: () => nginx.stop() });
    running.push(await bareFloor(dirs, upstream));
    for (const workers of [1, 2]) {
      const gateway = await gatehouseWorkers(dirs, upstream, workers);
      running.push({
        id: workers === 1 ? 'gatehouse-1' : 'gatehouse-2',
        url: gateway.url,
        headers: { authorization: `Bearer ${gateway.key}` },
        pid: gateway.service.pid,
        stop: () => gateway.service.stop(),
      });
    }
    const peer = await expressKeyPeer(dirs, upstream, writePeerKeys(dirs, peerKey), peerKey);
    running.push({
      id: 'express-key',
      url: peer.url,
      headers: peer.headers,
      pid: peer.service?.pid,
      stop: () => peer.stop(),
    });

    const load = (contender: Running, length: number) =>
      runWrk({
        url: `${contender.url}${CHAT_PATH}`,
        connections: CONNECTIONS,
        seconds: length,
        script,
        headers: contender.headers,
      });
    for (const contender of running) await load(contender, Math.min(2, seconds));
    const figures = new Map<ScalingId, Array<{ rps: number; cpuUs?: number }>>();
    for (let round = 0; round < rounds; round++) {
      for (const contender of running) {
        const before = contender.pid ? cpuMsOfTree(contender.pid) : undefined;
        const run = await load(contender, seconds);
        const failed = run.non2xx + run.socketErrors;
        if (failed) say(`WARNING: ${SCALING_LABELS[contender.id]}: ${failed} failed requests in round ${round + 1}`);
        const cpuUs =
          before === undefined
            ? undefined
            : ((cpuMsOfTree(contender.pid!) - before) * 1000) / Math.max(1, run.requests);
        figures.set(contender.id, [...(figures.get(contender.id) ?? []), { rps: run.rps, cpuUs }]);
      }
    }
    const rows = running.map(({ id }): CpuRow => {
      const each = figures.get(id)!;
      const cpu = each.flatMap((round) => (round.cpuUs === undefined ? [] : [round.cpuUs]));
      return {
        id,
        rps: median(each.map((round) => round.rps)),
        cpuUs: cpu.length ? median(cpu) : undefined,
        rounds: each,
      };
    });
    for (const row of rows) {
      say(
        `${SCALING_LABELS[row.id]}: ${Math.round(row.rps).toLocaleString('en-US')} req/s` +
          (row.cpuUs === undefined ? '' : `, ${row.cpuUs.toFixed(0)} µs CPU/request`),
      );
    }
    return rows;
  } finally {
    for (const contender of running.reverse()) await contender.stop().catch(() => undefined);
  }
}

/**
 * The Node floor and Gatehouse (one worker, the access log on) loaded by h2load at a rate both
 * serve, each a fresh process in every round. wrk's closed loop lets a process that happens to run
 * faster batch more requests per turn of its event loop, which moved the ratio of two runs of one
 * build between 1.32x and 1.73x; at a fixed rate each serves the same requests at the same pace.
 * The two run side by side, each under its own h2load, taking turns at being started first, so a
 * slow spell of this shared machine hits both sides of a round's ratio alike (bench/README.md,
 * "Budgets").
 */
export async function measureCpuAtRate(options: {
  dirs: RunDirs;
  upstream: string;
  seconds: number;
  rounds: number;
  rate: number;
  say(line: string): void;
}): Promise<CpuAtRate> {
  const { dirs, upstream, seconds, rate, say } = options;
  const body = writeChatBody(dirs.work);
  const start = async (which: 'floor' | 'gatehouse', round: number): Promise<Running> => {
    if (which === 'floor') return bareFloor(dirs, upstream);
    const gateway = await startKeyGateway({
      name: `gatehouse-at-rate-${round}`,
      dist: 'dist',
      work: dirs.work,
      logs: dirs.logs,
      upstream,
    });
    const headers = { authorization: `Bearer ${gateway.key}` };
    return {
      id: 'gatehouse-1',
      url: gateway.url,
      headers,
      pid: gateway.service.pid,
      stop: () => gateway.service.stop(),
    };
  };
  const rounds: CpuAtRate['rounds'] = [];
  for (let round = 0; round < options.rounds; round++) {
    const cpu = { floor: NaN, gatehouse: NaN };
    const order = round % 2 ? (['gatehouse', 'floor'] as const) : (['floor', 'gatehouse'] as const);
    const servers = await Promise.all(order.map((which) => start(which, round)));
    try {
      const runs = await cpuPerRequestSideBySide(
        servers.map((server) => ({
          url: `${server.url}${CHAT_PATH}`,
          headers: server.headers,
          cpuMs: () => cpuMsOfTree(server.pid!),
        })),
        { connections: CONNECTIONS, rate, seconds, body },
      );
      for (const [place, { cpuUs, run }] of runs.entries()) {
        const which = order[place]!;
        if (run.failed) {
          say(`WARNING: ${which} at ${rate} requests/s: ${run.failed} failed requests in round ${round + 1}`);
        }
        cpu[which] = cpuUs;
      }
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
    }
    rounds.push({ floorUs: cpu.floor, gatehouseUs: cpu.gatehouse });
  }
  const figures = {
    rate,
    seconds,
    sideBySide: true,
    floorUs: median(rounds.map((round) => round.floorUs)),
    gatehouseUs: median(rounds.map((round) => round.gatehouseUs)),
    rounds,
  };
  say(
    `at ${rate.toLocaleString('en-US')} requests/s: Node floor ${figures.floorUs.toFixed(0)} µs, ` +
      `Gatehouse ${figures.gatehouseUs.toFixed(0)} µs CPU/request`,
  );
  return figures;
}

/** How the streams run: 10 chunks 2 s apart keep all open together for seconds. */
export const STREAM_SCALE = { chunks: 10, delayMs: 2_000, openingAtOnce: 200 };
const STREAMS_WANTED = 10_000;
/** The gateway's own files (database, log, listener, event loop) besides two sockets per stream. */
const SPARE_FILES = 100;

/**
 * A stream takes two sockets in the gateway (client and platform), so 10,000 need more than 20,000
 * open files; where the hard limit is lower (and only a privileged process may raise it), the bench
 * holds as many as fit and says so.
 */
export function streamCountFor(openFiles: number): number {
  return Math.min(STREAMS_WANTED, Math.floor((openFiles - SPARE_FILES) / 2 / 50) * 50);
}

export async function measureStreamScale(options: {
  dirs: RunDirs;
  sseUpstream: string;
  say(line: string): void;
  openFiles: number;
  /** The build to measure; `dist` unless comparing builds (bench/streams.ts). */
  dist?: string;
}): Promise<StreamScale> {
  const { dirs, sseUpstream, say } = options;
  const count = streamCountFor(options.openFiles);
  const direct = await holdMeasured(count, { url: sseUpstream, headers: {} });
  say(
    `${direct.held.opened} of ${count} streams straight to the upstream: chunk delay p99 ` +
      `${percentile(direct.delays, 99).toFixed(2)} ms`,
  );
  // With Gatehouse's own Node flags (a smaller young generation), so the two differ only in code.
  const nodeFlags = cliNodeFlags(join(options.dist ?? 'dist', 'cli.js'));
  const floorServer = await bareFloor(dirs, sseUpstream, { connections: count + 16, nodeFlags });
  let floor: StreamScale['floor'];
  try {
    const through = await holdMeasured(count, floorServer, floorServer.pid);
    floor = { opened: through.held.opened, ...through.memory, p99: percentile(through.delays, 99) };
    say(`${floor.opened} of ${count} streams through the Node floor: ${memoryLine(floor)}`);
  } finally {
    await floorServer.stop();
  }
  const gateway = await gatehouseWorkers(dirs, sseUpstream, 1, options.dist);
  try {
    const through = await holdMeasured(
      count,
      { url: gateway.url, headers: { authorization: `Bearer ${gateway.key}` } },
      gateway.service.pid,
    );
    const figures: StreamScale = {
      ...STREAM_SCALE,
      count,
      wanted: STREAMS_WANTED,
      openFiles: options.openFiles,
      ...through.memory,
      opened: through.held.opened,
      failures: through.held.failures.slice(0, 10),
      direct: {
        p50: percentile(direct.delays, 50),
        p99: percentile(direct.delays, 99),
        opened: direct.held.opened,
      },
      gatehouse: { p50: percentile(through.delays, 50), p99: percentile(through.delays, 99) },
      floor,
    };
    say(
      `${through.held.opened} of ${count} streams through one Gatehouse worker: ${memoryLine(through.memory)}; ` +
        `chunk delay p99 ${figures.gatehouse.p99.toFixed(2)} ms` +
        (through.held.failures.length ? `; ${through.held.failures.length} failed: ${through.held.failures[0]}` : ''),
    );
    return figures;
  } finally {
    await gateway.service.stop();
  }
}

/**
 * Holds `count` streams through `target`, with every chunk's delay and, given the serving
 * process, its resident set idle (a second after start), with all streams open, and its peak.
 */
async function holdMeasured(
  count: number,
  target: { url: string; headers: Record<string, string> },
  pid?: number,
): Promise<{ held: HeldStreams; delays: number[]; memory: StreamMemory }> {
  const memory: StreamMemory = { idleRssMb: NaN, rssAllOpenMb: NaN, peakMb: NaN };
  if (pid !== undefined) {
    await sleep(1_000);
    memory.idleRssMb = memoryOf(pid).rssMb;
  }
  const delays: number[] = [];
  const onAllOpen = () => {
    if (pid !== undefined) memory.rssAllOpenMb = memoryOf(pid).rssMb;
  };
  const held = await holdStreams(target, { ...STREAM_SCALE, count, onAllOpen, delays });
  if (pid !== undefined) memory.peakMb = memoryOf(pid).peakMb;
  return { held, delays, memory };
}

function memoryLine({ idleRssMb, rssAllOpenMb, peakMb }: StreamMemory): string {
  return `RSS idle ${idleRssMb.toFixed(1)} MiB, all open ${rssAllOpenMb.toFixed(1)} MiB, peak ${peakMb.toFixed(1)} MiB`;
}

/** KB (1,000 bytes) of peak resident memory per open stream beyond the idle process. */
export function kbPerStream(scale: StreamMemory & { opened: number }): number {
  return ((scale.peakMb - scale.idleRssMb) * 1024 * 1024) / 1000 / Math.max(1, scale.opened);
}
