/**
 * Runs Debian's wrk (closed loop: each connection sends its next request when the answer arrives)
 * and reads requests/s, p50 and p99 from its `--latency` report. wrk shares the machine's two cores
 * with the servers it measures, the same for every contender.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GatehouseError } from '../../src/errors.js';
import { median } from './stats.js';

/** The request every contender serves: a small OpenAI chat completion request. */
export const CHAT_PATH = '/v1/chat/completions';
export const CHAT_BODY = JSON.stringify({
  model: 'demo-small',
  messages: [{ role: 'user', content: 'Say hello in one word.' }],
  max_tokens: 8,
});

export interface WrkRun {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Responses that were not 2xx or 3xx. */
  non2xx: number;
  /** connect + read + write + timeout errors. */
  socketErrors: number;
  /** Of the socket errors, requests unanswered after 5 s (wrk's --timeout). */
  timeouts: number;
}

export interface WrkOptions {
  url: string;
  connections: number;
  seconds: number;
  headers?: Record<string, string>;
  /** A Lua script (from `writeChatScript`) that turns each request into the chat POST. */
  script: string;
}

/** Writes the Lua script that makes wrk send `POST /v1/chat/completions` with CHAT_BODY. */
export function writeChatScript(dir: string): string {
  const path = join(dir, 'chat.lua');
  writeFileSync(
    path,
    ['wrk.method = "POST"', `wrk.body = '${CHAT_BODY}'`, 'wrk.headers["Content-Type"] = "application/json"', ''].join(
      '\n',
    ),
  );
  return path;
}

/** A request unanswered this long counts as failed (a timeout), not as a latency sample. */
const TIMEOUT_SECONDS = 5;

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function latencyMs(output: string, percent: number): number {
  const match = new RegExp(`^\\s+${percent}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(output);
  return match ? Number(match[1]) * UNIT_MS[match[2]!]! : NaN;
}

export async function runWrk(options: WrkOptions): Promise<WrkRun> {
  const args = [
    '-t2',
    `-c${options.connections}`,
    `-d${options.seconds}s`,
    '--timeout',
    `${TIMEOUT_SECONDS}s`,
    '--latency',
    '-s',
    options.script,
    ...Object.entries(options.headers ?? {}).flatMap(([name, value]) => ['-H', `${name}: ${value}`]),
    options.url,
  ];
  let output: string;
  try {
    ({ stdout: output } = await promisify(execFile)('wrk', args, {
      encoding: 'utf8',
      timeout: (options.seconds + 30) * 1000,
      maxBuffer: 1 << 20,
    }));
  } catch (error) {
    throw new GatehouseError('BENCH_WRK_FAILED', `wrk failed against ${options.url}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1] ?? NaN),
    p50Ms: latencyMs(output, 50),
    p99Ms: latencyMs(output, 99),
    requests: Number(/(\d+) requests in/.exec(output)?.[1] ?? 0),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0),
    socketErrors: socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0,
    timeouts: Number(socket?.[4] ?? 0),
  };
}

/** The median of each figure over the runs, and the failures of all of them added up. */
export function medianOf(runs: readonly WrkRun[]): WrkRun {
  const sum = (pick: (run: WrkRun) => number) => runs.reduce((total, run) => total + pick(run), 0);
  return {
    rps: median(runs.map((run) => run.rps)),
    p50Ms: median(runs.map((run) => run.p50Ms)),
    p99Ms: median(runs.map((run) => run.p99Ms)),
    requests: sum((run) => run.requests),
    non2xx: sum((run) => run.non2xx),
    socketErrors: sum((run) => run.socketErrors),
    timeouts: sum((run) => run.timeouts),
  };
}
