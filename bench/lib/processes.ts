/**
 * Every server under test runs in a process of its own, so wrk, the upstream and the contender never
 * share an event loop. Each child writes its output to a log file in the run's directory, which a
 * failure message points to.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { GatehouseError } from '../../src/errors.js';
import { cliNodeFlags } from '../../test/support/cli.js';

/** The repository root, so the bench runs the same from any working directory. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const STOP_TIMEOUT_MS = 5_000;

/** The arguments that start `<dist>/cli.js` as `npx gatehouse`, the image and `npm start` do. */
export function gatehouseCommand(dist: string, args: string[]): string[] {
  const cli = join(dist, 'cli.js');
  return [...cliNodeFlags(resolve(ROOT, cli)), cli, ...args];
}

export interface Service {
  name: string;
  pid: number;
  child: ChildProcess;
  logPath: string;
  /** performance.now() just before the process was spawned. */
  spawnedAt: number;
  /** The last lines of the log, for failure messages. */
  logTail(lines?: number): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process is gone. */
  stop(): Promise<void>;
}

const running = new Set<Service>();

/** Starts `command args` with its output in `logDir/name.log`. */
export function startProcess(
  name: string,
  command: string,
  args: string[],
  options: { logDir: string; env?: Record<string, string> },
): Service {
  const logPath = join(options.logDir, `${name}.log`);
  const fd = openSync(logPath, 'a');
  const spawnedAt = performance.now();
  const child = spawn(command, args, {
    cwd: ROOT,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...options.env },
  });
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (child.pid === undefined) throw new GatehouseError('BENCH_SPAWN_FAILED', `could not start ${name}: ${command}`);
  const service: Service = {
    name,
    pid: child.pid,
    child,
    logPath,
    spawnedAt,
    logTail: (lines = 20) => readFileSync(logPath, 'utf8').split('\n').slice(-lines).join('\n'),
    async stop() {
      running.delete(service);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const stopped = await Promise.race([exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
      if (!stopped) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
  running.add(service);
  return service;
}

/** Stops every process this run started and has not stopped yet. */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((service) => service.stop()));
}

/**
 * Polls `url` until it answers with `status`, and returns the milliseconds since the service was
 * spawned. Fails with the service's log when it exits or `timeoutMs` passes first.
 */
export async function waitForStatus(
  url: string,
  service: Service | undefined,
  { status = 200, timeoutMs = 15_000, intervalMs = 5, headers = {} as Record<string, string> } = {},
): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let last = 'no answer';
  for (;;) {
    try {
      const response = await fetch(url, { headers, redirect: 'manual', signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (response.status === status) return performance.now() - (service?.spawnedAt ?? 0);
      last = `HTTP ${response.status}`;
    } catch (error) {
      last = (error as Error).message;
    }
    if (service && (service.child.exitCode !== null || service.child.signalCode !== null)) {
      throw new GatehouseError(
        'BENCH_SERVICE_EXITED',
        `${service.name} exited (${service.child.exitCode ?? service.child.signalCode}) before ${url} answered ${status}; ${service.logPath}:\n${service.logTail()}`,
      );
    }
    if (performance.now() > deadline) {
      throw new GatehouseError(
        'BENCH_SERVICE_NOT_READY',
        `${url} did not answer ${status} within ${timeoutMs} ms (last: ${last})${service ? `; ${service.logPath}:\n${service.logTail()}` : ''}`,
      );
    }
    await sleep(intervalMs);
  }
}

export interface Memory {
  /** Resident set size now, in MiB. */
  rssMb: number;
  /** Peak resident set size over the process's life (VmHWM), in MiB. */
  peakMb: number;
}

/** Reads VmRSS and VmHWM from /proc/<pid>/status. */
export function memoryOf(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

/**
 * CPU time the process has used so far, user and kernel, in ms (/proc/<pid>/stat, clock ticks of
 * 10 ms). Divided by the requests served it gives CPU per request, a figure that moves far less
 * than requests/s when the machine is shared.
 */
export function cpuTimeOf(pid: number): { userMs: number; systemMs: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { userMs: Number(fields[11]) * 10, systemMs: Number(fields[12]) * 10 };
}
