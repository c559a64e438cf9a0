/**
 * Streaming measurements against the SSE upstream (bench/upstreams/sse.js), directly or through a
 * contender: how much later each chunk arrives than the upstream wrote it, how soon the upstream
 * sees a client leave, and many streams held open at once.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { GatehouseError } from '../../src/errors.js';
import { CHAT_PATH } from './wrk.js';

export interface StreamTarget {
  url: string;
  headers: Record<string, string>;
}

const STREAM_BODY = JSON.stringify({
  model: 'demo-small',
  stream: true,
  messages: [{ role: 'user', content: 'Count to twenty.' }],
});
const SENT_NS = /"sent_ns":"(\d+)"/;
/** Longest wait for the upstream to report a close before the sample counts as "never". */
const CLOSE_WAIT_MS = 2_000;

function streamUrl(target: StreamTarget, params: Record<string, string | number>): string {
  const query = new URLSearchParams(
    Object.entries(params).map(([name, value]): [string, string] => [name, String(value)]),
  );
  return `${target.url}${CHAT_PATH}?${query}`;
}

async function openStream(target: StreamTarget, url: string, dispatcher: Agent, signal?: AbortSignal) {
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...target.headers },
    body: STREAM_BODY,
    dispatcher,
    signal,
  });
  if (response.statusCode !== 200) {
    const text = await response.body.text().catch(() => '');
    throw new GatehouseError('BENCH_STREAM_REFUSED', `${url} answered ${response.statusCode}: ${text.slice(0, 200)}`);
  }
  return response.body;
}

/**
 * Calls `onFrame` with the arrival time (CLOCK_MONOTONIC ns) and text of each SSE frame; a read that
 * brings several frames gives them all the same arrival time, as a client would see them.
 */
async function readFrames(body: AsyncIterable<Buffer>, onFrame: (arrivedNs: bigint, frame: string) => void) {
  let buffered = '';
  for await (const piece of body) {
    const arrived = process.hrtime.bigint();
    buffered += piece.toString('utf8');
    for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
      onFrame(arrived, buffered.slice(0, end));
      buffered = buffered.slice(end + 2);
    }
  }
}

/**
 * Runs `streams` streams of `chunks` chunks `delayMs` apart at once, `rounds` times after one
 * warm-up round (which compiles this client's own code), and returns for every chunk the
 * milliseconds between the upstream writing it and this client reading it.
 */
export async function chunkDelays(
  target: StreamTarget,
  { streams, rounds, chunks, delayMs }: { streams: number; rounds: number; chunks: number; delayMs: number },
): Promise<number[]> {
  const dispatcher = new Agent({ connections: streams });
  const delays: number[] = [];
  const one = async () => {
    const url = streamUrl(target, { chunks, delay: delayMs });
    let received = 0;
    await readFrames(await openStream(target, url, dispatcher), (arrived, frame) => {
      const sent = SENT_NS.exec(frame)?.[1];
      if (sent === undefined) return;
      received += 1;
      delays.push(Number(arrived - BigInt(sent)) / 1e6);
    });
    if (received !== chunks) {
      throw new GatehouseError('BENCH_STREAM_SHORT', `${url} delivered ${received} of ${chunks} chunks`);
    }
  };
  try {
    await Promise.all(Array.from({ length: streams }, one));
    delays.length = 0;
    for (let round = 0; round < rounds; round++) await Promise.all(Array.from({ length: streams }, one));
  } finally {
    await dispatcher.close();
  }
  return delays;
}

/**
 * Opens a long stream, waits for its first chunk, hangs up, and returns the milliseconds until the
 * upstream saw its response close (Infinity when it did not within 2 s), `samples` times in turn.
 */
export async function disconnectDelays(target: StreamTarget, upstream: string, samples: number): Promise<number[]> {
  const dispatcher = new Agent({ connections: 4 });
  const delays: number[] = [];
  try {
    for (let sample = 0; sample < samples; sample++) {
      const id = `disconnect-${randomBytes(6).toString('hex')}`;
      const hangUp = new AbortController();
      const body = await openStream(
        target,
        streamUrl(target, { chunks: 10_000, delay: 20, id }),
        dispatcher,
        hangUp.signal,
      );
      const reader = body[Symbol.asyncIterator]();
      await reader.next();
      const leftAt = process.hrtime.bigint();
      hangUp.abort();
      await reader.next().catch(() => undefined);
      delays.push(await closedAfter(upstream, id, leftAt));
    }
  } finally {
    await dispatcher.close();
  }
  return delays;
}

async function closedAfter(upstream: string, id: string, leftAt: bigint): Promise<number> {
  const deadline = performance.now() + CLOSE_WAIT_MS;
  while (performance.now() < deadline) {
    const response = await fetch(`${upstream}/closed/${id}`);
    const { closed_ns: closedNs } = (await response.json()) as { closed_ns: string | null };
    if (closedNs !== null) return Number(BigInt(closedNs) - leftAt) / 1e6;
    await sleep(2);
  }
  return Infinity;
}

export interface HeldStreams {
  /** Streams that answered 200 and delivered their first chunk. */
  opened: number;
  /** Streams that delivered every chunk. */
  completed: number;
  failures: string[];
  /** Milliseconds from the first request until every stream had its first chunk (NaN if some never did). */
  allOpenAfterMs: number;
}

/**
 * Holds `count` streams open at once over as many connections, opening at most `openingAtOnce` at a
 * time (a listen backlog drops a burst of 1,000 SYNs); `onAllOpen` runs once every stream has its
 * first chunk, while they are all still open.
 */
export async function holdStreams(
  target: StreamTarget,
  options: {
    count: number;
    chunks: number;
    delayMs: number;
    openingAtOnce: number;
    onAllOpen(): void;
    /** When given, receives every chunk's upstream write -> client read, in ms. */
    delays?: number[];
  },
): Promise<HeldStreams> {
  const { count, chunks, delayMs, openingAtOnce } = options;
  const dispatcher = new Agent({ connections: count + 16, headersTimeout: 60_000, bodyTimeout: 60_000 });
  const started = performance.now();
  const result: HeldStreams = { opened: 0, completed: 0, failures: [], allOpenAfterMs: NaN };
  let opening = 0;
  const waiting: Array<() => void> = [];
  const slot = async () => {
    while (opening >= openingAtOnce) await new Promise<void>((resolve) => waiting.push(resolve));
    opening += 1;
  };
  const release = () => {
    opening -= 1;
    waiting.shift()?.();
  };
  const one = async () => {
    await slot();
    let released = false;
    let received = 0;
    try {
      const body = await openStream(target, streamUrl(target, { chunks, delay: delayMs }), dispatcher);
      await readFrames(body, (arrived, frame) => {
        const sent = SENT_NS.exec(frame)?.[1];
        if (sent === undefined) return;
        options.delays?.push(Number(arrived - BigInt(sent)) / 1e6);
        received += 1;
        if (received !== 1) return;
        released = true;
        release();
        result.opened += 1;
        if (result.opened === count) {
          result.allOpenAfterMs = performance.now() - started;
          options.onAllOpen();
        }
      });
      if (received === chunks) result.completed += 1;
      else result.failures.push(`stream ended after ${received} of ${chunks} chunks`);
    } catch (error) {
      result.failures.push((error as Error).message);
    } finally {
      if (!released) release();
    }
  };
  try {
    await Promise.all(Array.from({ length: count }, one));
  } finally {
    await dispatcher.close();
  }
  return result;
}
