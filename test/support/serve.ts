import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { gatehouseArgs } from './cli.js';
import { msUntil } from './wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** Output kept for failure messages: the tail, where a crash or the last log lines are. */
const OUTPUT_KEPT = 20_000;

/** A gateway started by `gatehouse serve --config <file>` in a process of its own, as an operator runs it. */
export interface ServeProcess {
  url: string;
  /** Everything the process wrote to stdout (the log: one JSON object per line). */
  stdout(): string;
  stderr(): string;
  /** The last 20,000 characters of stdout and stderr as they came, for failure messages. */
  output(): string;
  /** Resolves with the exit code (null when ended by a signal) and when it came. */
  exited: Promise<{ code: number | null; at: number }>;
  hasExited(): boolean;
  /** Sends the signal and returns when it was sent. */
  signal(name: NodeJS.Signals): number;
  /** SIGTERM, then SIGKILL once `graceMs` has passed; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface ServeOptions {
  /** Config edits, written as `<dir>/<name>.yaml`; `gateway.host` and `gateway.port` give the URL. */
  config: Record<string, unknown>;
  dir: string;
  name?: string;
  /** LOG_LEVEL of the process. */
  logLevel?: string;
}

/** Starts `gatehouse serve` without waiting for it: for a process expected to exit on its own. */
export function spawnServe({ config, dir, name = 'config', logLevel = 'warn' }: ServeOptions): ServeProcess {
  const { host = '127.0.0.1', port } = (config.gateway ?? {}) as { host?: string; port?: number };
  const configFile = join(dir, `${name}.yaml`);
  // JSON is YAML, and spares a serializer.
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  const child = spawn(process.execPath, gatehouseArgs('serve', '--config', configFile), {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: logLevel },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let output = '';
  const keep = (chunk: Buffer) => (output = (output + chunk.toString('utf8')).slice(-OUTPUT_KEPT));
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<{ code: number | null; at: number }>((resolve) =>
    child.once('exit', (code) => resolve({ code, at: Date.now() })),
  );
  const hasExited = () => child.exitCode !== null || child.signalCode !== null;
  return {
    url: `http://${host}:${port}`,
    stdout: () => stdout,
    stderr: () => stderr,
    output: () => output,
    exited,
    hasExited,
    signal(signal) {
      child.kill(signal);
      return Date.now();
    },
    async stop(graceMs = 5_000) {
      if (hasExited()) return;
      child.kill('SIGTERM');
      if ((await Promise.race([exited.then(() => 'exited'), sleep(graceMs)])) !== 'exited') {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/**
 * Polls `path` (/readyz: storage open and migrated; /healthz: listening) until it answers 200;
 * fails with the process's output if it exits first or is not ready within `withinMs`.
 */
export async function waitUntilReady(gateway: ServeProcess, path = '/readyz', withinMs = 45_000): Promise<void> {
  let last = 'no answer';
  const ready = async () => {
    try {
      const response = await fetch(`${gateway.url}${path}`);
      last = `${response.status} ${await response.text()}`;
      if (response.status === 200) return true;
    } catch (error) {
      last = (error as Error).message;
    }
    return gateway.hasExited();
  };
  await msUntil(ready, Date.now(), { everyMs: 100, limitMs: withinMs });
  if (gateway.hasExited() || !last.startsWith('200 ')) {
    const state = gateway.hasExited() ? 'exited' : `not ready within ${withinMs} ms`;
    throw new Error(`${gateway.url}${path}: ${state} (${last}); output:\n${gateway.output().slice(-4_000)}`);
  }
}

/** Starts `gatehouse serve` and resolves once `readyPath` answers 200. */
export async function startServe(options: ServeOptions & { readyPath?: string }): Promise<ServeProcess> {
  const gateway = spawnServe(options);
  await waitUntilReady(gateway, options.readyPath);
  return gateway;
}
