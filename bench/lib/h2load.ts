/**
 * Runs Debian's h2load (nghttp2-client) over HTTP/1.1 at a fixed request rate (open loop: each
 * connection sends on a clock, not when its answer arrives). At a rate every contender can serve,
 * CPU per request compares the work each does for the same load; wrk's closed loop instead lets a
 * faster process batch more requests per turn of its event loop, which moves CPU per request by
 * 20-30 % between fresh processes of the same build.
 */
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GatehouseError } from '../../src/errors.js';
import { CHAT_BODY } from './wrk.js';

export const H2LOAD = '/usr/bin/h2load';

export function hasH2load(): boolean {
  return existsSync(H2LOAD);
}

export interface RateOptions {
  url: string;
  connections: number;
  /** Requests per second over all connections. */
  rate: number;
  seconds: number;
  headers?: Record<string, string>;
  /** A file holding the POST body (from `writeChatBody`). */
  body: string;
}

export interface RateRun {
  /** Requests answered 2xx or 3xx. */
  succeeded: number;
  /** Requests unanswered or answered otherwise. */
  failed: number;
}

/** Writes CHAT_BODY to a file for h2load's `-d`. */
export function writeChatBody(dir: string): string {
  const path = join(dir, 'chat.json');
  writeFileSync(path, CHAT_BODY);
  return path;
}

export async function runAtRate(options: RateOptions): Promise<RateRun> {
  const args = [
    '--h1',
    `--clients=${options.connections}`,
    '--max-concurrent-streams=1',
    `--rps=${options.rate / options.connections}`,
    `--duration=${options.seconds}`,
    `--data=${options.body}`,
    '--header=content-type: application/json',
    ...Object.entries(options.headers ?? {}).map(([name, value]) => `--header=${name}: ${value}`),
    options.url,
  ];
  let output: string;
  try {
    ({ stdout: output } = await promisify(execFile)(H2LOAD, args, {
      encoding: 'utf8',
      timeout: (options.seconds + 30) * 1000,
      maxBuffer: 1 << 22,
    }));
  } catch (error) {
    throw new GatehouseError(
      'BENCH_H2LOAD_FAILED',
      `h2load failed against ${options.url}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  // h2load counts an answer other than 2xx or 3xx as failed.
  const requests = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(output);
  if (!requests) throw new GatehouseError('BENCH_H2LOAD_FAILED', `h2load printed no request counts:\n${output}`);
  return { succeeded: Number(requests[1]), failed: Number(requests[2]) };
}

/**
 * CPU per request of a server at `rate`: a warm-up of `min(2, seconds)` s, then a measured run,
 * reading the server's CPU time in ms (user + kernel) before and after it with `cpuMs`.
 */
async function cpuPerRequestAtRate(
  options: RateOptions & { cpuMs(): number },
): Promise<{ cpuUs: number; run: RateRun }> {
  await runAtRate({ ...options, seconds: Math.min(2, options.seconds) });
  const before = options.cpuMs();
  const run = await runAtRate(options);
  return { cpuUs: ((options.cpuMs() - before) * 1000) / Math.max(1, run.succeeded), run };
}

/**
 * CPU per request of servers loaded at once, each by its own h2load at the same rate: a slow
 * spell of the shared machine then hits all of them alike, so their ratios within one call hold
 * steadier than those of servers measured one after the other (bench/README.md, "Budgets").
 * Answers in the order of `servers`; callers vary that order between rounds.
 */
export function cpuPerRequestSideBySide(
  servers: ReadonlyArray<Pick<RateOptions, 'url' | 'headers'> & { cpuMs(): number }>,
  options: Omit<RateOptions, 'url' | 'headers'>,
): Promise<Array<{ cpuUs: number; run: RateRun }>> {
  return Promise.all(servers.map((server) => cpuPerRequestAtRate({ ...options, ...server })));
}
