/**
 * `npm run soak`: Gatehouse under a steady mixed load for SOAK_SECONDS (default 600), watching that
 * its memory and open handles stay flat and that nothing fails. Not part of CI.
 *
 * The gateway runs as its own process (`node --import tsx src/cli.ts serve`, or the built
 * `dist/cli.js` with SOAK_DIST=1 after `npm run build`); the faulty test provider, the sample
 * platform and the load run in this process. SOAK_WORKERS workers (default 20) each pace themselves
 * to share SOAK_RATE operations per second (default 100), so the load is steady rather than
 * saturating. Each operation is one of:
 *  - 70% an API-key JSON request (`POST /v1/chat/completions`, or `GET /v1/models` one time in five);
 *  - 20% an API-key SSE stream of 10 chunks, read to `data: [DONE]`;
 *  - 10% a full browserless sign-in (login -> provider -> callback) and `/v1/auth/me`; every other
 *    one signs out again, so sessions both pile up and end, as they do in use.
 * Every 10 s the gateway's RSS (VmRSS in /proc/<pid>/status) and open file descriptors (entries of
 * /proc/<pid>/fd) are sampled. The verdict: RSS grows less than 10% from the 25% mark to the end
 * (each read as the median of a quarter of the run, as RSS saws between garbage collections), the
 * descriptor count stays within ±20 of its value at the 25% mark, and no operation failed.
 * Exit status 1 when the verdict fails. Everything listens on 127.0.0.1.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { startSamplePlatform } from '../src/demo/platform.js';
import { GatehouseError } from '../src/errors.js';
import { Browserless } from '../test/support/browserless.js';
import { startFaultyProvider } from '../test/support/faulty-provider.js';
import { freePort } from '../test/support/ports.js';
import { memoryOf, startProcess, waitForStatus, type Service } from './lib/processes.js';
import { median, percentile } from './lib/stats.js';

const SECONDS = positive('SOAK_SECONDS', 600);
const WORKERS = positive('SOAK_WORKERS', 20);
const RATE = positive('SOAK_RATE', 100);
const USE_DIST = process.env.SOAK_DIST === '1';
const SAMPLE_EVERY_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;
const STREAM_CHUNKS = 10;
const RSS_GROWTH_LIMIT = 0.1;
const FD_TOLERANCE = 20;
/** Clock ticks per second, the unit of utime and stime in /proc/<pid>/stat. */
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

const CLIENT_ID = 'gatehouse-soak';
const CLIENT_SECRET = 'soak-client-secret-that-is-long-enough';
const EMAIL = 'soak@example.com';
/** "You said:" and eight words: the sample platform streams one event per word, so ten events. */
const STREAM_PROMPT = 'one two three four five six seven eight';

type Kind = 'key' | 'stream' | 'sign-in';

interface Sample {
  atSeconds: number;
  rssMb: number;
  fds: number;
  /** CPU seconds (user + system) the gateway has used since it started. */
  cpuSeconds: number;
  operations: number;
}

interface Tally {
  done: Record<Kind, number>;
  latenciesMs: Record<Kind, number[]>;
  errors: Map<string, number>;
  /** The first message of each error kind, for the report. */
  examples: Map<string, string>;
}

function positive(name: string, fallback: number): number {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(value) || value <= 0) {
    throw new GatehouseError('SOAK_BAD_SETTING', `${name} must be a positive number, got ${process.env[name]}`);
  }
  return value;
}

/** A failed operation, named by a kind that groups like failures in the report. */
class SoakFailure extends GatehouseError {
  constructor(
    readonly kind: string,
    message: string,
  ) {
    super('SOAK_OPERATION_FAILED', message);
  }
}

function expectStatus(kind: string, response: Response, status: number, what: string): void {
  if (response.status !== status) {
    throw new SoakFailure(`${kind}: HTTP ${response.status}`, `${what} answered ${response.status}, not ${status}`);
  }
}

/** Runs the gateway's CLI the way the gateway itself runs, and resolves with what it printed. */
async function runCli(args: string[]): Promise<string> {
  const entry = USE_DIST ? ['dist/cli.js'] : ['--import', 'tsx', 'src/cli.ts'];
  const { stdout } = await promisify(execFile)(process.execPath, [...entry, ...args], { encoding: 'utf8' });
  return stdout;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-soak-'));
  const logs = join(work, 'logs');
  mkdirSync(logs);
  console.log(`soak: ${SECONDS} s, ${WORKERS} workers, ${RATE} operations/s; files in ${work}`);

  const port = await freePort();
  const website = `http://127.0.0.1:${port}`;
  const platform = await startSamplePlatform({ chunkDelayMs: 20, record: false });
  const provider = await startFaultyProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUri: `${website}/v1/auth/auth`,
    email: EMAIL,
  });
  const configPath = join(work, 'gatehouse.yaml');
  // JSON is YAML: the loader reads it as it reads any llama_config_edits.yaml.
  const config = {
    auth: { key_hash_secret: randomBytes(36).toString('base64url') },
    powerml: { website },
    auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: provider.metadataUrl },
    gateway: {
      host: '127.0.0.1',
      port,
      upstream: platform.url,
      data_dir: join(work, 'data'),
      shutdown_grace_seconds: 2,
    },
    database: { url: `sqlite:${join(work, 'gatehouse.db')}` },
  };
  writeFileSync(configPath, JSON.stringify(config, null, 2));

  let gateway: Service | undefined;
  let passed = false;
  try {
    const created = await runCli(['keys', 'create', '--email', EMAIL, '--name', 'soak', '--config', configPath]);
    const apiKey = /^(gth_\S+)$/m.exec(created)?.[1];
    if (!apiKey) throw new GatehouseError('SOAK_SETUP_FAILED', `gatehouse keys create printed no key:\n${created}`);

    const entry = USE_DIST ? ['dist/cli.js'] : ['--import', 'tsx', 'src/cli.ts'];
    gateway = startProcess('gatehouse', process.execPath, [...entry, 'serve', '--config', configPath], {
      logDir: logs,
    });
    await waitForStatus(`${website}/readyz`, gateway, { timeoutMs: 30_000, intervalMs: 50 });
    const { samples, tally, elapsedSeconds } = await soak(gateway, website, apiKey);
    passed = report(samples, tally, elapsedSeconds);
  } finally {
    await gateway?.stop();
    await Promise.all([platform.close(), provider.close()]);
    if (passed) rmSync(work, { recursive: true, force: true });
    else console.log(`soak: kept ${work} (gateway log: ${join(logs, 'gatehouse.log')})`);
  }
  process.exitCode = passed ? 0 : 1;
}

async function soak(gateway: Service, website: string, apiKey: string) {
  const tally: Tally = {
    done: { key: 0, stream: 0, 'sign-in': 0 },
    latenciesMs: { key: [], stream: [], 'sign-in': [] },
    errors: new Map(),
    examples: new Map(),
  };
  const started = performance.now();
  const deadline = started + SECONDS * 1000;
  const samples: Sample[] = [];
  const operationsDone = () => tally.done.key + tally.done.stream + tally.done['sign-in'];
  const sample = () => {
    const { rssMb } = memoryOf(gateway.pid);
    const fds = readdirSync(`/proc/${gateway.pid}/fd`).length;
    const atSeconds = (performance.now() - started) / 1000;
    samples.push({ atSeconds, rssMb, fds, cpuSeconds: cpuSecondsOf(gateway.pid), operations: operationsDone() });
  };
  sample();
  const sampler = setInterval(sample, SAMPLE_EVERY_MS);

  const operations = new Operations(website, apiKey);
  const intervalMs = (1000 * WORKERS) / RATE;
  const worker = async (index: number) => {
    // Staggered starts, so the workers' slots spread over the interval instead of arriving together.
    let next = started + (intervalMs * index) / WORKERS;
    let signIns = 0;
    while (next < deadline) {
      await sleep(Math.max(0, next - performance.now()));
      const kind = pickKind();
      const begun = performance.now();
      try {
        if (kind === 'key') await operations.keyRequest();
        else if (kind === 'stream') await operations.stream();
        else await operations.signIn(signIns++ % 2 === 1);
        tally.done[kind] += 1;
        tally.latenciesMs[kind].push(performance.now() - begun);
      } catch (error) {
        const failure =
          error instanceof SoakFailure
            ? error
            : new SoakFailure(`${kind}: ${(error as Error).name}`, describeError(error));
        tally.errors.set(failure.kind, (tally.errors.get(failure.kind) ?? 0) + 1);
        if (!tally.examples.has(failure.kind)) tally.examples.set(failure.kind, failure.message);
      }
      // A slot missed while busy is dropped rather than made up in a burst: the load stays steady.
      next = Math.max(next + intervalMs, performance.now());
    }
  };
  await Promise.all(Array.from({ length: WORKERS }, (_, index) => worker(index)));
  clearInterval(sampler);
  const elapsedSeconds = (performance.now() - started) / 1000;
  sample();
  return { samples, tally, elapsedSeconds };
}

/** utime + stime from /proc/<pid>/stat (fields 14 and 15, counted after the parenthesised name). */
function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

function pickKind(): Kind {
  const roll = Math.random();
  return roll < 0.7 ? 'key' : roll < 0.9 ? 'stream' : 'sign-in';
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message}${cause}`;
}

class Operations {
  private keyCalls = 0;
  constructor(
    private readonly website: string,
    private readonly apiKey: string,
  ) {}

  private keyed(path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(`${this.website}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${this.apiKey}`, 'content-type': 'application/json', ...init.headers },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  }

  async keyRequest(): Promise<void> {
    if (this.keyCalls++ % 5 === 4) {
      const response = await this.keyed('/v1/models');
      const body = await response.text();
      expectStatus('key', response, 200, 'GET /v1/models');
      if (!body.includes('"demo-small"'))
        throw new SoakFailure('key: wrong body', `GET /v1/models: ${body.slice(0, 200)}`);
      return;
    }
    const response = await this.keyed('/v1/chat/completions', {
      method: 'POST',
      body: JSON.stringify({ model: 'demo-small', messages: [{ role: 'user', content: 'Hello there' }] }),
    });
    const body = await response.text();
    expectStatus('key', response, 200, 'POST /v1/chat/completions');
    if (!body.includes('You said: Hello there')) {
      throw new SoakFailure('key: wrong body', `POST /v1/chat/completions: ${body.slice(0, 200)}`);
    }
  }

  async stream(): Promise<void> {
    const response = await this.keyed('/v1/chat/completions', {
      method: 'POST',
      headers: { accept: 'text/event-stream' },
      body: JSON.stringify({ model: 'demo-small', stream: true, messages: [{ role: 'user', content: STREAM_PROMPT }] }),
    });
    if (response.status !== 200) await response.body?.cancel();
    expectStatus('stream', response, 200, 'POST /v1/chat/completions (stream)');
    const text = await response.text();
    const events = text.split('\n\n').filter((frame) => frame.startsWith('data: '));
    const chunks = events.filter((frame) => frame !== 'data: [DONE]').length;
    if (chunks !== STREAM_CHUNKS || events.at(-1) !== 'data: [DONE]') {
      throw new SoakFailure(
        'stream: incomplete',
        `${chunks} chunks, last frame ${JSON.stringify(events.at(-1)?.slice(0, 60))}`,
      );
    }
  }

  /** login -> provider -> callback -> /v1/auth/me, then optionally sign-out, as a browser without JavaScript does. */
  async signIn(signOut: boolean): Promise<void> {
    const browser = new Browserless();
    const timeout = { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) };
    const login = await browser.fetch(`${this.website}/v1/auth/login?return_to=%2Fv1%2Fmodels`, timeout);
    expectStatus('sign-in login', login, 302, 'GET /v1/auth/login');
    const authorize = await browser.fetch(login.headers.get('location')!, timeout);
    expectStatus('sign-in provider', authorize, 302, 'the provider’s authorization endpoint');
    const callback = await browser.fetch(authorize.headers.get('location')!, timeout);
    const page = await callback.text();
    if (callback.status !== 302) {
      throw new SoakFailure(`sign-in callback: HTTP ${callback.status}`, page.replace(/\s+/g, ' ').slice(0, 300));
    }
    const me = await browser.fetch(`${this.website}/v1/auth/me`, timeout);
    const who = await me.text();
    expectStatus('sign-in me', me, 200, 'GET /v1/auth/me');
    if (!who.includes(EMAIL)) throw new SoakFailure('sign-in me: wrong user', who.slice(0, 200));
    if (!signOut) return;
    const logout = await browser.fetch(`${this.website}/v1/auth/logout`, {
      ...timeout,
      method: 'POST',
      headers: { origin: this.website },
    });
    await logout.body?.cancel();
    expectStatus('sign-out', logout, 302, 'POST /v1/auth/logout');
  }
}

/** Prints the samples, the operations and the verdict; true when the verdict passes. */
function report(samples: Sample[], tally: Tally, elapsedSeconds: number): boolean {
  const lines: string[] = ['', '## Samples (gateway process)', ''];
  lines.push('| t (s) | RSS (MiB) | open fds | operations | CPU since last sample |');
  lines.push('| ----: | --------: | -------: | ---------: | --------------------: |');
  samples.forEach((s, index) => {
    const previous = samples[index - 1];
    // The closing sample follows the last interval sample within a second: too short to say anything.
    const seconds = previous ? s.atSeconds - previous.atSeconds : 0;
    const cpu =
      previous && seconds >= 1 ? `${((100 * (s.cpuSeconds - previous.cpuSeconds)) / seconds).toFixed(0)}%` : '';
    lines.push(`| ${s.atSeconds.toFixed(1)} | ${s.rssMb.toFixed(1)} | ${s.fds} | ${s.operations} | ${cpu} |`);
  });

  const total = tally.done.key + tally.done.stream + tally.done['sign-in'];
  const failures = [...tally.errors.values()].reduce((sum, count) => sum + count, 0);
  lines.push('', '## Operations', '', '| kind | done | p50 (ms) | p99 (ms) |', '| ---- | ---: | -------: | -------: |');
  for (const kind of ['key', 'stream', 'sign-in'] as const) {
    const latencies = tally.latenciesMs[kind];
    lines.push(
      `| ${kind} | ${tally.done[kind]} | ${percentile(latencies, 50).toFixed(1)} | ${percentile(latencies, 99).toFixed(1)} |`,
    );
  }
  lines.push(
    '',
    `${total} operations in ${elapsedSeconds.toFixed(0)} s (${(total / elapsedSeconds).toFixed(1)}/s), ${failures} failed.`,
  );

  lines.push('', '## Errors by kind', '');
  if (tally.errors.size === 0) lines.push('none');
  for (const [kind, count] of tally.errors) lines.push(`- ${kind}: ${count} (first: ${tally.examples.get(kind)})`);

  // The mark is the first sample at or after a quarter of the run: start-up and warm-up are behind it.
  const mark = samples.find((s) => s.atSeconds >= elapsedSeconds / 4) ?? samples[0]!;
  const last = samples.at(-1)!;
  // RSS saws up and down by a fifth between garbage collections, so two single samples can differ
  // by more than the limit with nothing leaking: each mark is judged by the median of the quarter
  // of the run that follows or ends at it (25-50% and 75-100%); the single samples are shown too.
  const rssOf = (from: number, to: number) =>
    median(
      samples
        .filter((s) => s.atSeconds >= from * elapsedSeconds && s.atSeconds <= to * elapsedSeconds)
        .map((s) => s.rssMb),
    );
  // A run shorter than four samples may leave a window empty: the single samples stand in.
  const rssAtMark = rssOf(0.25, 0.5) || mark.rssMb;
  const rssAtEnd = rssOf(0.75, 1) || last.rssMb;
  const growth = (rssAtEnd - rssAtMark) / rssAtMark;
  const after = samples.filter((s) => s.atSeconds >= mark.atSeconds);
  const fdLow = Math.min(...after.map((s) => s.fds));
  const fdHigh = Math.max(...after.map((s) => s.fds));
  const rssFlat = growth < RSS_GROWTH_LIMIT;
  const fdsFlat = fdLow >= mark.fds - FD_TOLERANCE && fdHigh <= mark.fds + FD_TOLERANCE;
  const noErrors = failures === 0;
  const passed = rssFlat && fdsFlat && noErrors;
  const markTime = `${mark.atSeconds.toFixed(0)} s`;
  const pointGrowth = (100 * (last.rssMb - mark.rssMb)) / mark.rssMb;
  lines.push(
    '',
    '## Verdict',
    '',
    `- RSS median ${rssAtMark.toFixed(1)} MiB over 25-50% -> ${rssAtEnd.toFixed(1)} MiB over 75-100%: ` +
      `${(growth * 100).toFixed(1)}% (limit < ${RSS_GROWTH_LIMIT * 100}%) ${rssFlat ? 'PASS' : 'FAIL'}` +
      ` [single samples: ${mark.rssMb.toFixed(1)} MiB at ${markTime} -> ${last.rssMb.toFixed(1)} MiB at the end, ${pointGrowth.toFixed(1)}%]`,
    `- open fds ${mark.fds} at ${markTime}, ${fdLow}..${fdHigh} since (limit ±${FD_TOLERANCE}) ${fdsFlat ? 'PASS' : 'FAIL'}`,
    `- errors: ${failures} ${noErrors ? 'PASS' : 'FAIL'}`,
    '',
    passed ? 'PASS' : 'FAIL',
  );
  console.log(lines.join('\n'));
  return passed;
}

await main();
