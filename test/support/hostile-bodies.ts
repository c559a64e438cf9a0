/**
 * Hostile request bodies in flight against a running gateway while /healthz is probed: the load of
 * issue 12's finding 1, shared by test/e2e/body-limits.test.ts and bench/hostile-bodies.ts.
 */
import { execFile } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { GATEWAY_BODY_LIMIT } from '../../src/http/body-parsers.js';

const MIB = 1024 * 1024;
/**
 * Senders upload 64 KB every TICK_MS (1.3 MB/s each), so each body is in flight until the gateway
 * refuses it. Sent back to back at full speed instead, sixteen senders are a flood of bandwidth that
 * no server on two shared cores answers promptly: /healthz p99 here measured 57 to 160 ms that way.
 */
const TICK_MS = 50;

/**
 * A sender that has not read one answer when `seconds` are up keeps posting this much longer. The
 * senders run at the lowest CPU priority: beside a busy process they may get almost no CPU for
 * seconds, and a refusal that arrives while a sender is still uploading can be lost to the reset
 * that follows the gateway's close (the sender then records 0). Each sender must still read the
 * refusal it was sent for; this only leaves a starved one the time to.
 */
const FIRST_ANSWER_GRACE_MS = 15_000;

/**
 * Sixteen senders, four per body in the settings, each posting its body again once it was answered,
 * for `seconds` from the moment all bodies are built (and past it, up to FIRST_ANSWER_GRACE_MS,
 * until each has read an answer); prints each sender's statuses as JSON. Plain JavaScript, run as a
 * process of its own at the lowest CPU priority, so that writing megabytes (the test's work, not
 * the gateway's) takes no time from the gateway's event loop.
 */
const HOSTILE_SENDERS = `
const http = require('node:http');
const { url, key, seconds, tickMs, graceMs, bodies } = JSON.parse(process.env.HOSTILE_SENDERS);
const build = ({ kind, bytes }) =>
  kind === 'nested' ? Buffer.from((bytes > 300000 ? '{"model":"demo-small","messages":' : '') + '['.repeat(bytes))
  : kind === 'flat' ? Buffer.from('[' + '1,'.repeat(Math.floor(bytes / 2)) + '1]')
  : Buffer.from(JSON.stringify({ model: 'demo-small', messages: [{ role: 'user', content: 'x'.repeat(bytes) }] }));
const post = (path, body, chunked) => new Promise((resolve) => {
  const headers = { 'content-type': 'application/json', authorization: 'Bearer ' + key };
  if (!chunked) headers['content-length'] = body.length;
  let answered = false;
  const outgoing = http.request(url + path, { method: 'POST', headers }, (incoming) => {
    answered = true;
    incoming.resume();
    incoming.on('end', () => {
      outgoing.destroy();
      resolve(incoming.statusCode);
    });
  });
  outgoing.on('error', () => (answered ? undefined : resolve(0)));
  // A piece every tickMs, as a slow client uploads: the body stays in flight until it is refused.
  (async () => {
    for (let at = 0; at < body.length && !answered && !outgoing.destroyed; at += 65536) {
      outgoing.write(body.subarray(at, at + 65536));
      await new Promise((next) => setTimeout(next, tickMs));
    }
    if (!answered) outgoing.end();
  })();
});
const built = bodies.map((spec) => ({ ...spec, body: build(spec) }));
const until = Date.now() + seconds * 1000;
const senders = [];
for (let round = 0; round < 4; round += 1) {
  for (const spec of built) {
    const statuses = [];
    const answered = () => statuses.some((status) => status !== 0);
    senders.push((async () => {
      while (Date.now() < until || (!answered() && Date.now() < until + graceMs))
        statuses.push(await post(spec.path, spec.body, spec.chunked));
      return statuses;
    })());
  }
}
Promise.all(senders).then((all) => process.stdout.write(JSON.stringify(all)));
`;

export interface HostileRun {
  /** /healthz p99 (ms) with nothing hostile in flight, for comparison. */
  quietP99: number;
  hostileP99: number;
  hostileMax: number;
  probes: number;
  /** Each sender's answers, in the order of `bodies` below, four senders per body. */
  statuses: number[][];
  /** This process's event loop delay while the senders ran (ms). */
  loopDelayP99: number;
  loopDelayMax: number;
}

/**
 * Probes /healthz for 1.5 s quietly, then while sixteen senders post, for `seconds`: four each of a
 * leak report nested just under the gateway's body limit (400), a completion nested just under
 * `checkedBodyMb` (400), a 1 MiB leak report (413) and a completion of twice `checkedBodyMb` (413),
 * the last two chunked so that only reading finds them too large.
 */
export async function measureHealthzUnderHostileBodies(options: {
  url: string;
  key: string;
  checkedBodyMb: number;
  seconds: number;
}): Promise<HostileRun> {
  const { url, key, checkedBodyMb, seconds } = options;
  const quietUntil = performance.now() + 1_500;
  const quiet = await probeHealthz(url, () => performance.now() < quietUntil);
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();
  const settings = {
    url,
    key,
    seconds,
    tickMs: TICK_MS,
    graceMs: FIRST_ANSWER_GRACE_MS,
    bodies: [
      // Nested bodies just under each limit, so that depth and not size refuses them.
      { path: '/v1/auth/api-keys/leaked', kind: 'nested', bytes: GATEWAY_BODY_LIMIT.bytes - 1 },
      { path: '/v1/chat/completions', kind: 'nested', bytes: checkedBodyMb * MIB - 100 },
      { path: '/v1/auth/api-keys/leaked', kind: 'flat', bytes: MIB, chunked: true },
      { path: '/v1/chat/completions', kind: 'chat', bytes: 2 * checkedBodyMb * MIB, chunked: true },
    ],
  };
  const finished = promisify(execFile)('nice', ['-n', '19', process.execPath, '-e', HOSTILE_SENDERS], {
    env: { ...process.env, HOSTILE_SENDERS: JSON.stringify(settings) },
  }).then(({ stdout }) => JSON.parse(stdout) as number[][]);
  let sending = true;
  void finished.finally(() => (sending = false)).catch(() => undefined);
  const latencies = await probeHealthz(url, () => sending);
  const statuses = await finished;
  loopDelay.disable();
  return {
    quietP99: percentile(quiet, 0.99),
    hostileP99: percentile(latencies, 0.99),
    hostileMax: Math.max(...latencies),
    probes: latencies.length,
    statuses,
    loopDelayP99: loopDelay.percentile(99) / 1e6,
    loopDelayMax: loopDelay.max / 1e6,
  };
}

export function describeHealthzRun(run: HostileRun): string {
  return (
    `/healthz p99 ${run.quietP99.toFixed(1)} ms quiet; while 16 hostile senders ran: p99 ${run.hostileP99.toFixed(1)} ms, ` +
    `max ${run.hostileMax.toFixed(1)} ms, ${run.probes} probes; ${run.statuses.flat().length} hostile requests refused ` +
    `(${run.statuses.flat().filter((status) => status === 0).length} reset before the refusal was read); ` +
    `event loop delay p99 ${run.loopDelayP99.toFixed(1)} ms, max ${run.loopDelayMax.toFixed(1)} ms`
  );
}

/** GET /healthz every 10 ms while `going()`; the latency of each, in ms. */
async function probeHealthz(url: string, going: () => boolean): Promise<number[]> {
  const latencies: number[] = [];
  while (going()) {
    const started = performance.now();
    const answer = await fetch(`${url}/healthz`);
    await answer.arrayBuffer();
    if (answer.status !== 200) throw new Error(`/healthz answered ${answer.status}`);
    latencies.push(performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return latencies;
}

function percentile(values: readonly number[], fraction: number): number {
  if (values.length === 0) throw new Error('no /healthz samples to take a percentile of');
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]!;
}
