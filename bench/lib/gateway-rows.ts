/**
 * Runs Gatehouse (`dist/cli.js serve`) once per configuration in front of the same nginx
 * upstream and measures the API-key path with wrk, so rows of one table differ only in config.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../test/support/ports.js';
import { startJsonUpstream } from './nginx.js';
import { gatehouseCommand, startProcess, stopAll, waitForStatus, type Service } from './processes.js';
import { CHAT_PATH, medianOf, runWrk, writeChatScript, type WrkRun } from './wrk.js';

export interface GatewayRow {
  label: string;
  /** Config edits on top of a gateway with a key hash secret and an unreachable provider. */
  config: Record<string, unknown>;
  /** Extra `gatehouse keys create` arguments (scopes, models, limits). */
  keyArgs?: string[];
}

export const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
export const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);

/** A Gatehouse process started from a build, with one API key of its own. */
export interface KeyGateway {
  url: string;
  key: string;
  service: Service;
}

/**
 * Starts `<dist>/cli.js serve` (as `npx gatehouse` runs it) on a SQLite file in `work`, in front of `upstream`, with a key
 * made by `gatehouse keys create` (plus `keyArgs`), and waits for /healthz. `configEdits` go on top
 * of a config with a key hash secret and an unreachable provider: keys need none.
 */
export async function startKeyGateway(options: {
  name: string;
  dist: string;
  /** Node flags for the serving process, such as `--max-semi-space-size=8`. */
  nodeFlags?: string[];
  work: string;
  logs: string;
  upstream: string;
  configEdits?: Record<string, unknown>;
  keyArgs?: string[];
  /** How long /healthz may take: N workers start N processes at once. */
  readyTimeoutMs?: number;
}): Promise<KeyGateway> {
  const { name, dist, nodeFlags = [], work, logs, upstream, configEdits = {}, keyArgs = [], readyTimeoutMs } = options;
  const port = await freePort();
  const config = join(work, `${name}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      powerml: { website: `http://127.0.0.1:${port}` },
      auth_provider: {
        client_id: 'bench',
        client_secret: 'bench',
        server_metadata_url: 'http://127.0.0.1:9/.well-known/openid-configuration',
      },
      database: { url: `sqlite:${join(work, `${name}.db`)}` },
      ...configEdits,
      auth: {
        key_hash_secret: 'bench-key-hash-secret-that-is-long-enough-1234',
        ...(configEdits.auth as object),
      },
      gateway: {
        host: '127.0.0.1',
        port,
        upstream,
        data_dir: join(work, `data-${name}`),
        ...(configEdits.gateway as object),
      },
    }),
  );
  const cli = join(dist, 'cli.js');
  const create = [cli, 'keys', 'create', '--email', 'bench@example.com', '--name', name, ...keyArgs];
  const { stdout } = await promisify(execFile)(process.execPath, [...create, '--config', config]);
  const key = /^(gth_\S+)$/m.exec(stdout)![1]!;
  const service = startProcess(
    name,
    process.execPath,
    [...nodeFlags, ...gatehouseCommand(dist, ['serve', '--config', config])],
    {
      logDir: logs,
    },
  );
  await waitForStatus(`http://127.0.0.1:${port}/healthz`, service, { timeoutMs: readyTimeoutMs });
  return { url: `http://127.0.0.1:${port}`, key, service };
}

export async function measureRows(rows: GatewayRow[]): Promise<Array<[string, WrkRun]>> {
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-rows-'));
  const logs = join(work, 'logs');
  mkdirSync(logs);
  const script = writeChatScript(work);
  const upstream = await startJsonUpstream();
  const results: Array<[string, WrkRun]> = [];
  try {
    for (const [index, row] of rows.entries()) {
      const gateway = await startKeyGateway({
        name: `row-${index}`,
        dist: 'dist',
        work,
        logs,
        upstream: upstream.url,
        configEdits: {
          ...row.config,
          auth: { failed_auth_per_minute: 0, ...(row.config.auth as object) },
          gateway: { log_level: 'warn' },
        },
        keyArgs: row.keyArgs,
      });
      const options = {
        url: `${gateway.url}${CHAT_PATH}`,
        connections: 32,
        script,
        headers: { authorization: `Bearer ${gateway.key}` },
      };
      await runWrk({ ...options, seconds: 2 });
      const runs: WrkRun[] = [];
      for (let i = 0; i < REPEATS; i++) runs.push(await runWrk({ ...options, seconds: SECONDS }));
      results.push([row.label, medianOf(runs)]);
      await gateway.service.stop();
    }
  } finally {
    await stopAll();
    await upstream.close();
  }
  return results;
}

export function printRows(title: string, results: Array<[string, WrkRun]>): void {
  const base = results[0]![1].rps;
  console.log(`\n${title}: POST ${CHAT_PATH}, wrk -t2 -c32, ${SECONDS} s × ${REPEATS}, median\n`);
  console.log(`| Row | req/s | p50 ms | p99 ms | × ${results[0]![0]} | failed |`);
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const [label, run] of results) {
    console.log(
      `| ${label} | ${Math.round(run.rps).toLocaleString('en-US')} | ${run.p50Ms.toFixed(2)} | ${run.p99Ms.toFixed(2)} | ${(run.rps / base).toFixed(2)}× | ${run.non2xx + run.socketErrors} |`,
    );
  }
}
