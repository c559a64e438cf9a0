/**
 * `gatehouse demo` as a newcomer runs it: what it prints, that the demo user reaches the admin
 * console, and what it says when one of its three ports is taken.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_USER } from '../../src/demo/provider.js';
import { Browserless } from '../support/browserless.js';
import { gatehouseArgs } from '../support/cli.js';

interface Demo {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<number | null>;
}

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-demo-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts `gatehouse demo` in its own working directory; resolves when it is up or has exited. */
async function startDemo(port: number): Promise<Demo> {
  const child = spawn(process.execPath, gatehouseArgs('demo', '--port', String(port)), {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const demo: Demo = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
  };
  child.stdout!.on('data', (chunk: Buffer) => (demo.stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (demo.stderr += chunk.toString()));
  await new Promise<void>((resolve) => {
    child.stdout!.on('data', () => demo.stdout.includes('Press Ctrl+C') && resolve());
    void demo.exited.then(() => resolve());
  });
  return demo;
}

async function stopDemo(demo: Demo): Promise<void> {
  if (demo.child.exitCode === null) demo.child.kill('SIGTERM');
  await demo.exited;
}

function hold(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** Three consecutive ports free right now, as the demo needs; each held until handed back. */
async function threeFreePorts(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const first = await hold(0);
    const port = (first!.address() as { port: number }).port;
    const rest = [await hold(port + 1), await hold(port + 2)];
    await Promise.all([first, ...rest].map((server) => server && new Promise((done) => server.close(done))));
    if (rest.every(Boolean) && port + 2 <= 65_535) return port;
  }
  throw new Error('no three consecutive free ports');
}

describe('gatehouse demo', () => {
  let demo: Demo;
  let port: number;
  beforeAll(async () => {
    port = await threeFreePorts();
    demo = await startDemo(port);
    expect(demo.stdout, demo.stderr).toContain('Press Ctrl+C');
  });
  afterAll(() => stopDemo(demo));

  it('says the demo user is an admin and where the admin console is', () => {
    expect(demo.stdout).toContain(`${DEMO_USER.email}  /  password: ${DEMO_USER.password}   (an admin)`);
    expect(demo.stdout).toContain(`Admin console     http://127.0.0.1:${port}/v1/auth/admin`);
  });

  it('lets the demo user, signed in through the demo provider, into the admin console', async () => {
    const website = `http://127.0.0.1:${port}`;
    const browser = new Browserless();
    const { response: page, visited } = await browser.follow(`${website}/v1/auth/login?return_to=/v1/auth/admin`);
    await page.body?.cancel();
    const interaction = visited.at(-1)!;
    expect(interaction).toMatch(/\/interaction\/[\w-]+$/);
    const login = await browser.fetch(`${interaction}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ email: DEMO_USER.email, password: DEMO_USER.password }),
    });
    const { response: landed, visited: back } = await browser.follow(
      new URL(login.headers.get('location')!, interaction).href,
    );
    expect(back.at(-1)).toBe(`${website}/v1/auth/admin`);
    expect(landed.status).toBe(200);
    const users = await browser.fetch(`${website}/v1/auth/admin/users`, { headers: { accept: 'application/json' } });
    expect(users.status).toBe(200);
    expect(JSON.stringify(await users.json())).toContain(DEMO_USER.email);
  });

  it('names the busy port and the --port flag when a port is taken, and exits 1', async () => {
    // The running demo holds all three; a second one on the same ports finds the first taken.
    const second = await startDemo(port);
    expect(await second.exited).toBe(1);
    expect(second.stderr).toContain(`port ${port + 2} on 127.0.0.1 (the sample platform) is already in use`);
    expect(second.stderr).toContain('--port');
    expect(second.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('gatehouse demo with only the gateway port taken', () => {
  it('names the gateway port', async () => {
    const port = await threeFreePorts();
    const held = await hold(port);
    try {
      const demo = await startDemo(port);
      expect(await demo.exited).toBe(1);
      expect(demo.stderr).toContain(`port ${port} on 127.0.0.1 (the gateway) is already in use`);
      expect(demo.stderr).toContain(`--port ${port + 10}`);
    } finally {
      await new Promise((done) => held!.close(done));
    }
  });
});
