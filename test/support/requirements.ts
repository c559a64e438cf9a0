/**
 * Probes for what slower tests need beyond Node: a Chromium binary, PostgreSQL, Redis, kubectl.
 * On a developer's box a missing resource skips its tests with a message nobody can overlook; in
 * CI (`CI=true`) it fails the file instead, so a broken runner never turns into a green build.
 */
import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { connect } from 'node:net';
import { GatehouseError } from '../../src/errors.js';

export const chromiumPath = '/usr/bin/chromium';

/** True when the Chromium binary exists and answers `--version` (it may be mid-install by apt). */
export async function hasChromium(): Promise<boolean> {
  try {
    await access(chromiumPath, constants.X_OK);
  } catch {
    return false;
  }
  return new Promise((resolve) => {
    execFile(chromiumPath, ['--version'], { timeout: 15_000 }, (error, stdout) => {
      resolve(!error && /chromium/i.test(stdout));
    });
  });
}

/** True when `kubectl` runs (its client alone: rendering Kustomize needs no cluster). */
export function hasKubectl(): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('kubectl', ['version', '--client'], { timeout: 15_000 }, (error) => resolve(!error));
  });
}

/**
 * True when something accepts a TCP connection on host:port. Tried three times with 5 s each: while
 * test files load in parallel the event loop can stall past a short timeout, and the timer then
 * fires before the connection that already succeeded is seen; in CI that would fail a whole file.
 */
export async function hasTcp(port: number, host = '127.0.0.1'): Promise<boolean> {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    if (await connects(port, host)) return true;
  }
  return false;
}

function connects(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host });
    const finish = (reachable: boolean): void => {
      socket.destroy();
      resolve(reachable);
    };
    socket.setTimeout(5_000, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/**
 * Use at module top level:
 * `const chromium = await requireResource('chromium', hasChromium(), 'apt-get install chromium')`,
 * then `describe.skipIf(!chromium)(...)`. Warns loudly and resolves false when the resource is
 * missing; throws instead when `CI=true`, so the test file fails.
 */
export async function requireResource(
  name: string,
  available: Promise<boolean>,
  howToInstall: string,
): Promise<boolean> {
  if (await available) return true;
  if (process.env.CI === 'true') {
    throw new GatehouseError(
      'TEST_RESOURCE_MISSING',
      `${name} is required in CI (CI=true) but is not available. ${howToInstall}`,
    );
  }
  const lines = [
    `SKIPPING tests that need ${name}: it is not available here.`,
    howToInstall,
    'In CI (CI=true) these tests fail instead of skipping.',
  ];
  const width = Math.max(...lines.map((line) => line.length));
  const rule = '!'.repeat(width + 4);
  console.warn(['', rule, ...lines.map((line) => `! ${line.padEnd(width)} !`), rule, ''].join('\n'));
  return false;
}

/** PostgreSQL on 127.0.0.1:5432, as the tests of the PostgreSQL storage and of replicas use it. */
export function requirePostgres(): Promise<boolean> {
  return requireResource(
    'postgresql',
    hasTcp(5432),
    'apt-get install postgresql, with trust auth for user postgres on 127.0.0.1 and a database named test',
  );
}

/** Redis on 127.0.0.1:6379. */
export function requireRedis(): Promise<boolean> {
  return requireResource('redis', hasTcp(6379), 'apt-get install redis-server');
}
