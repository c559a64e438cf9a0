/**
 * `gateway.workers: 2`: two processes serve one port as one service. What must be global holds
 * across them without Redis (rate limits per key and per user, budgets, the failed-auth and
 * device-code limits, revocations, disabled users, usage counts), a killed worker is replaced while
 * /readyz says so, and SIGTERM drains both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { Browserless } from '../support/browserless.js';
import { gatehouseArgs } from '../support/cli.js';
import { startFaultyProvider, type FaultyProvider } from '../support/faulty-provider.js';
import { createKey } from '../support/keys.js';
import { freePort } from '../support/ports.js';
import { signInForSession } from '../support/sign-in.js';
import { inOneMinuteWindow } from '../support/wait.js';
import { CLIENT_ID, CLIENT_SECRET, testDatabase } from '../support/stack.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FAILED_AUTH_PER_MINUTE = 5;
const DEVICE_CODES_PER_MINUTE = 3;

interface Answer {
  status: number;
  requestId: string;
  body: string;
}

/**
 * One request (a form POST when `form` is given) on a connection of its own: the kernel hands each
 * new connection to one worker, so requests spread over both only when they do not share a
 * keep-alive connection.
 */
function fresh(url: string, headers: Record<string, string> = {}, form?: string): Promise<Answer> {
  const method = form === undefined ? 'GET' : 'POST';
  return new Promise((resolve, reject) => {
    const sent = request(url, { method, agent: false, headers: { connection: 'close', ...headers } }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () =>
        resolve({ status: response.statusCode!, requestId: String(response.headers['x-request-id']), body }),
      );
    });
    sent.on('error', reject);
    sent.end(form);
  });
}

interface LogLine {
  msg?: string;
  worker?: number;
  pid?: number;
  reqId?: string;
}

/** How long a worker's access log line may take to reach this test: each worker writes its log in batches. */
const LOG_ARRIVES_MS = 5_000;

/** A `gatehouse serve` with two workers, its own provider and SQLite file (or PostgreSQL schema), and what it logs. */
interface WorkersService {
  url: string;
  metricsUrl: string;
  provider: FaultyProvider;
  child: ChildProcess;
  /** The exit code, once the service has exited. */
  exited: Promise<number | null>;
  /** Everything the primary and the workers wrote so far. */
  output: string;
  logLines(): LogLine[];
  /** The worker slots whose access log lines carry these answers' request ids. */
  workersThatServed(answers: Answer[]): Set<number | undefined>;
  readyStatus(): Promise<number>;
  close(): Promise<void>;
}

async function startWorkersService(platform: SamplePlatform, auth: Record<string, unknown>): Promise<WorkersService> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-workers-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const metricsPort = await freePort();
  const provider = await startFaultyProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUri: `${url}/v1/auth/auth`,
  });
  const database =
    process.env.GATEHOUSE_TEST_DATABASE === 'postgres' ? testDatabase() : { url: `sqlite:${join(dir, 'g.db')}` };
  const configFile = join(dir, 'config.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      powerml: { website: url },
      auth,
      auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: provider.metadataUrl },
      gateway: {
        host: '127.0.0.1',
        port,
        upstream: platform.url,
        data_dir: join(dir, 'data'),
        workers: 2,
        metrics_port: metricsPort,
        // Lets each test speak for a client address of its own (X-Forwarded-For from loopback).
        trusted_proxies: ['127.0.0.1'],
      },
      database,
      // On for key budgets alone: nobody else is charged, so the other tests are not.
      budgets: { enabled: true },
    }),
  );
  const child = spawn(process.execPath, gatehouseArgs('serve', '--config', configFile), {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const service: WorkersService = {
    url,
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    provider,
    child,
    exited,
    output: '',
    logLines: () =>
      service.output
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as LogLine),
    workersThatServed(answers) {
      const ids = new Set(answers.map((answer) => answer.requestId));
      return new Set(
        service
          .logLines()
          .filter((line) => line.msg === 'request' && ids.has(line.reqId!))
          .map((line) => line.worker),
      );
    },
    readyStatus: () =>
      fresh(`${url}/readyz`).then(
        (answer) => answer.status,
        () => 0,
      ),
    async close() {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      provider.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  child.stdout!.on('data', (chunk: Buffer) => (service.output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (service.output += chunk.toString('utf8')));
  const started = Date.now();
  while ((await service.readyStatus()) !== 200) {
    if (child.exitCode !== null || Date.now() - started > 60_000) throw new Error(`not ready:\n${service.output}`);
    await sleep(100);
  }
  return service;
}

/** Signs `browser` in at `service` as `who`; the provider's next sign-ins are `who` too. */
async function signedInAs(service: WorkersService, who: { sub: string; email: string }): Promise<Browserless> {
  Object.assign(service.provider, { subject: who.sub, email: who.email });
  const browser = new Browserless();
  await signInForSession(service, browser);
  return browser;
}

/** Sends 8 requests with `key` at once, so that both workers have it cached; each must pass. */
async function warmUp(service: WorkersService, key: string, name: string): Promise<void> {
  const warm = await Promise.all(
    Array.from({ length: 8 }, (_, index) =>
      fresh(`${service.url}/echo/${name}-${index}`, { authorization: `Bearer ${key}` }),
    ),
  );
  expect(warm.map((answer) => answer.status)).toEqual(Array(8).fill(200));
}

/**
 * Polls until every worker refuses `key` with `status`, and logs how long after the call each was
 * first seen refusing it. Each round comes from an address of its own, below the failed-auth
 * limit, so the refusal seen is the one asked for and not that limit's 429.
 */
async function refusedEverywhere(service: WorkersService, key: string, status: number, what: string): Promise<void> {
  const since = Date.now();
  const firstRefusal = new Map<number | undefined, number>();
  let round = 0;
  await expect
    .poll(
      async () => {
        const from = { 'x-forwarded-for': `198.51.100.${++round}` };
        const startedAt = Date.now();
        const tries = await Promise.all(
          Array.from({ length: FAILED_AUTH_PER_MINUTE - 1 }, () =>
            fresh(`${service.url}/echo/after`, { ...from, authorization: `Bearer ${key}` }),
          ),
        );
        const refused = tries.filter((answer) => answer.status === status);
        // When each worker was first seen refusing: the start of the round whose request it refused.
        for (const worker of service.workersThatServed(refused)) {
          if (!firstRefusal.has(worker)) firstRefusal.set(worker, startedAt - since);
        }
        return refused.length === tries.length && service.workersThatServed(tries).size === 2;
      },
      // Well past the 1 s promised: the machine running the tests may be loaded.
      { timeout: 3_000, interval: 20 },
    )
    .toBe(true);
  console.log(
    `${what}: first refused by worker 1 / worker 2 in the round that began ` +
      `${firstRefusal.get(1)} / ${firstRefusal.get(2)} ms after it`,
  );
}

/**
 * Sends 24 requests to `/echo/<name>-N`, each on a connection of its own and with `keys` in turn,
 * within one minute window: under a limit of 10 a minute, 10 pass and 14 are refused, and both
 * workers answered some of them.
 */
async function expectTenOfTwentyFour(service: WorkersService, keys: string[], name: string): Promise<void> {
  await inOneMinuteWindow();
  const answers: Answer[] = [];
  for (let index = 0; index < 24; index++) {
    const authorization = `Bearer ${keys[index % keys.length]!}`;
    answers.push(await fresh(`${service.url}/echo/${name}-${index}`, { authorization }));
  }
  const statuses = answers.map((answer) => answer.status);
  expect(statuses.filter((status) => status === 200)).toHaveLength(10);
  expect(statuses.filter((status) => status === 429)).toHaveLength(14);
  await expect
    .poll(() => service.workersThatServed(answers), {
      timeout: LOG_ARRIVES_MS,
      message: 'both workers answered some of the requests',
    })
    .toEqual(new Set([1, 2]));
}

const ADMIN = { sub: 'test-user-1', email: 'ada@example.test' };
const MEMBER = { sub: 'member-1', email: 'member@example.test' };

let platform: SamplePlatform;
let main: WorkersService;
let url: string;
let browser: Browserless;

beforeAll(async () => {
  platform = await startSamplePlatform();
  main = await startWorkersService(platform, {
    failed_auth_per_minute: FAILED_AUTH_PER_MINUTE,
    device: { codes_per_minute: DEVICE_CODES_PER_MINUTE },
    admin_emails: [ADMIN.email],
  });
  url = main.url;
  browser = await signedInAs(main, ADMIN);
}, 90_000);

afterAll(async () => {
  await main?.close();
  await platform?.close();
});

describe('gatehouse serve with gateway.workers: 2', () => {
  it('starts two workers on one port, each logging its slot', () => {
    const listening = main.logLines().filter((line) => line.msg === 'gatehouse is listening');
    expect(new Set(listening.map((line) => line.worker))).toEqual(new Set([1, 2]));
  });

  it('holds a key to 10 requests a minute across both workers, not 10 each', async () => {
    const { key } = await createKey(main, browser, { name: 'limited', requests_per_minute: 10 });
    await expectTenOfTwentyFour(main, [key], 'limited');
  });

  it('holds a key to one token budget across both workers, overspending less than one request estimate per counting process', async () => {
    const limit = 500;
    const { key } = await createKey(main, browser, { name: 'budgeted', budget: { tokens: limit, period: 'day' } });
    const maxTokens = 30;
    // The sample platform reports 20 prompt tokens and 22 completion tokens for this question.
    const question = JSON.stringify({
      model: 'demo-small',
      messages: [{ role: 'user', content: Array.from({ length: 20 }, (_, i) => `w${i}`).join(' ') }],
      max_tokens: maxTokens,
    });
    const cost = 42;
    // The reservation: a quarter token per body byte for the prompt, plus max_tokens; README's
    // bound is that concurrent requests overspend by less than one such estimate per process that
    // admits into a lease of its own: on SQLite the primary counts for both workers, on
    // PostgreSQL each worker holds its own lease.
    const estimate = Math.ceil(Buffer.byteLength(question) / 4) + maxTokens;
    const counting = process.env.GATEHOUSE_TEST_DATABASE === 'postgres' ? 2 : 1;
    const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const keyBudgetUsed = async () => {
      const answer = await fresh(`${url}/v1/auth/budgets`, { authorization: `Bearer ${key}` });
      const budgets = (JSON.parse(answer.body) as { data: Array<{ scope: string; used: number }> }).data;
      return budgets.find((budget) => budget.scope === 'key')?.used;
    };
    const served: Answer[] = [];
    for (let wave = 0; wave < 20; wave++) {
      const answers = await Promise.all(
        Array.from({ length: 6 }, () => fresh(`${url}/v1/chat/completions`, headers, question)),
      );
      expect(answers.every((answer) => answer.status === 200 || answer.status === 429)).toBe(true);
      const admitted = answers.filter((answer) => answer.status === 200);
      served.push(...admitted);
      // Settling follows each answer's end: the next wave sees what this one used.
      await expect.poll(keyBudgetUsed, { timeout: 5_000, interval: 50 }).toBe(served.length * cost);
      if (admitted.length === 0) break;
    }
    const used = served.length * cost;
    console.log(
      `key budget of ${limit} tokens across 2 workers: ${served.length} admitted, ${used} tokens used ` +
        `(overspend ${used - limit}, bound ${counting * estimate - 1})`,
    );
    await expect
      .poll(() => main.workersThatServed(served), {
        timeout: LOG_ARRIVES_MS,
        message: 'both workers admitted some of the requests',
      })
      .toEqual(new Set([1, 2]));
    expect(used).toBeGreaterThanOrEqual(limit);
    expect(used - limit).toBeLessThan(counting * estimate);
  });

  it('counts failed keys from one address across both workers, then refuses it everywhere', async () => {
    // The limit counts per wall-clock minute: all of these requests must fall in one.
    await inOneMinuteWindow(10_000);
    const from = { 'x-forwarded-for': '203.0.113.9' };
    const failures: Answer[] = [];
    for (let index = 0; index < FAILED_AUTH_PER_MINUTE; index++) {
      failures.push(await fresh(`${url}/echo/guess`, { ...from, authorization: `Bearer sk-wrong-${index}` }));
    }
    expect(failures.map((answer) => answer.status)).toEqual(Array(FAILED_AUTH_PER_MINUTE).fill(401));
    // The primary tells every worker as it counts; poll rather than race that message.
    await expect
      .poll(
        async () => {
          const refusals = await Promise.all(
            Array.from({ length: 8 }, () => fresh(`${url}/echo/guess`, { ...from, authorization: 'Bearer sk-again' })),
          );
          return refusals.every((answer) => answer.status === 429) && main.workersThatServed(refusals).size === 2;
        },
        { timeout: 5_000, interval: 50 },
      )
      .toBe(true);
    const elsewhere = await fresh(`${url}/echo/other-address`, { 'x-forwarded-for': '203.0.113.10' });
    expect(elsewhere.status, 'another address is not limited').toBe(401);
  });

  it('refuses a key revoked through one worker on every worker within 1 s', async () => {
    const { id, key } = await createKey(main, browser, { name: 'to revoke' });
    await warmUp(main, key, 'warm');
    const revoked = await browser.fetch(`${url}/v1/auth/api-keys/${id}`, {
      method: 'DELETE',
      headers: { origin: url },
    });
    expect(revoked.status).toBe(204);
    await refusedEverywhere(main, key, 401, 'revoked key');
  });

  it('refuses the keys of a user disabled through one worker on every worker within 1 s', async () => {
    const member = await signedInAs(main, MEMBER);
    const { key } = await createKey(main, member, { name: 'member key' });
    await warmUp(main, key, 'member');
    const users = (await (await browser.fetch(`${url}/v1/auth/admin/users`)).json()) as {
      data: Array<{ id: string; subject: string }>;
    };
    const memberId = users.data.find((user) => user.subject === MEMBER.sub)!.id;
    const disabled = await browser.fetch(`${url}/v1/auth/admin/users/${memberId}/disable`, {
      method: 'POST',
      headers: { origin: url },
    });
    expect(disabled.status).toBe(200);
    await refusedEverywhere(main, key, 403, 'disabled user');
  });

  it('sums the usage both workers counted', async () => {
    const { id, key } = await createKey(main, browser, { name: 'counted' });
    const answers: Answer[] = [];
    for (let index = 0; index < 12; index++) {
      answers.push(await fresh(`${url}/echo/counted-${index}`, { authorization: `Bearer ${key}` }));
    }
    await expect.poll(() => main.workersThatServed(answers), { timeout: LOG_ARRIVES_MS }).toEqual(new Set([1, 2]));
    // Each worker writes its batch every 2 s; the rows are incremented, never overwritten.
    await expect
      .poll(
        async () => {
          const usage = (await (await browser.fetch(`${url}/v1/auth/usage`)).json()) as {
            data: Array<{ key_id: string; requests: number }>;
          };
          return usage.data.filter((row) => row.key_id === id).reduce((sum, row) => sum + row.requests, 0);
        },
        { timeout: 10_000, interval: 200 },
      )
      .toBe(12);
  });

  it('holds device codes to the per-address limit across both workers', async () => {
    // The limit counts per wall-clock minute: all of these requests must fall in one.
    await inOneMinuteWindow(10_000);
    const from = { 'x-forwarded-for': '192.0.2.77', 'content-type': 'application/x-www-form-urlencoded' };
    const answers: Answer[] = [];
    for (let index = 0; index < 2 * DEVICE_CODES_PER_MINUTE + 2; index++) {
      answers.push(await fresh(`${url}/v1/auth/device/code`, from, 'client_id=workers-test'));
    }
    const statuses = answers.map((answer) => answer.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(DEVICE_CODES_PER_MINUTE);
    expect(statuses.filter((status) => status === 429)).toHaveLength(DEVICE_CODES_PER_MINUTE + 2);
    await expect
      .poll(() => main.workersThatServed(answers), {
        timeout: LOG_ARRIVES_MS,
        message: 'both workers answered some of the requests',
      })
      .toEqual(new Set([1, 2]));
  });

  it("serves the metrics port from the primary, with both workers' requests summed", async () => {
    const { key } = await createKey(main, browser, { name: 'measured' });
    const platformAnswers = async () => {
      const response = await fetch(main.metricsUrl);
      expect(response.status).toBe(200);
      const text = await response.text();
      return [...text.matchAll(/^gatehouse_requests_total\{([^}]*)\} (\d+)$/gm)]
        .filter(([, labels]) => labels!.includes('route="platform"') && labels!.includes('auth="api_key"'))
        .reduce((sum, [, , value]) => sum + Number(value), 0);
    };
    const before = await platformAnswers();
    const answers: Answer[] = [];
    for (let index = 0; index < 12; index++) {
      answers.push(await fresh(`${url}/echo/measured-${index}`, { authorization: `Bearer ${key}` }));
    }
    expect(answers.every((answer) => answer.status === 200)).toBe(true);
    await expect.poll(() => main.workersThatServed(answers), { timeout: LOG_ARRIVES_MS }).toEqual(new Set([1, 2]));
    expect(await platformAnswers()).toBe(before + 12);
  });

  it('replaces a killed worker, and /readyz is 503 until the replacement listens', async () => {
    const before = main.logLines().filter((line) => line.msg === 'gatehouse is listening');
    const victim = before.find((line) => line.worker === 2)!;
    process.kill(victim.pid!, 'SIGKILL');
    await expect.poll(() => main.readyStatus(), { timeout: 5_000, interval: 10 }).toBe(503);
    await expect.poll(() => main.readyStatus(), { timeout: 60_000, interval: 100 }).toBe(200);
    // The replacement logs that it listens, then tells the primary over IPC; the log line travels
    // through stdout pipes and may reach this test after /readyz already counts the worker.
    const replacementPid = () =>
      main
        .logLines()
        .filter((line) => line.msg === 'gatehouse is listening' && line.worker === 2)
        .at(-1)!.pid;
    await expect.poll(replacementPid, { timeout: 5_000, interval: 10 }).not.toBe(victim.pid);
    // The primary's line travels through its own logger and pipe: it may come after the worker's.
    await expect
      .poll(() => main.output, { timeout: 5_000, interval: 10 })
      .toMatch(/"msg":"worker exited; replacing it"/);
    const answers = await Promise.all(Array.from({ length: 8 }, () => fresh(`${url}/readyz`)));
    expect(answers.every((answer) => answer.status === 200)).toBe(true);
  }, 90_000);

  it('drains both workers on SIGTERM: an open stream finishes, then the service exits 0', async () => {
    const { key } = await createKey(main, browser, { name: 'streaming' });
    const response = await fetch(`${url}/slow-stream?chunks=10&delayMs=100`, {
      headers: { authorization: `Bearer ${key}` },
    });
    expect(response.status).toBe(200);
    const body = response.text();
    await sleep(200);
    main.child.kill('SIGTERM');
    const text = await body;
    expect(text).toContain('[DONE]');
    expect(await main.exited, main.output.slice(-3_000)).toBe(0);
    expect(main.logLines().filter((line) => line.msg === 'stopped' && line.worker !== undefined)).toHaveLength(2);
  }, 60_000);
});

describe('gatehouse serve with gateway.workers: 2 and auth.user_requests_per_minute: 10', () => {
  let limited: WorkersService;
  afterAll(() => limited?.close());

  it('holds a user to 10 requests a minute over two keys and both workers, not 10 each', async () => {
    limited = await startWorkersService(platform, { failed_auth_per_minute: 0, user_requests_per_minute: 10 });
    const owner = await signedInAs(limited, MEMBER);
    const keys = [await createKey(limited, owner, { name: 'one' }), await createKey(limited, owner, { name: 'two' })];
    await expectTenOfTwentyFour(
      limited,
      keys.map(({ key }) => key),
      'user-limited',
    );
  }, 90_000);
});
