/**
 * How each contender is started, what credentials its requests carry, and what it must answer
 * without them (proof that authentication is really on the measured path).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import SqliteDatabase from 'better-sqlite3';
import { GatehouseError } from '../../src/errors.js';
import { Browserless } from '../../test/support/browserless.js';
import { startFaultyProvider, type FaultyProvider } from '../../test/support/faulty-provider.js';
import { freePort } from '../../test/support/ports.js';
import { startForwardAuth, startNginxProxy } from './nginx.js';
import { gatehouseCommand, startProcess, waitForStatus, type Service } from './processes.js';

export interface Contender {
  /** Base URL without a trailing slash; requests go to CHAT_PATH under it. */
  url: string;
  /** Credentials (and Origin, for cookie sessions) sent with every request. */
  headers: Record<string, string>;
  /** The status a request without credentials must get; undefined where there is no authentication. */
  deniedStatus?: number;
  /** The server under test, for its memory; undefined for nginx. */
  service?: Service;
  stop(): Promise<void>;
}

/** Where a run keeps its files. */
export interface RunDirs {
  /** Databases, configs, scripts. */
  work: string;
  /** One log file per process. */
  logs: string;
}

/** A fresh temporary directory for a run named `name`, with its logs folder, which it prints. */
export function makeRunDirs(name: string): RunDirs {
  const work = mkdtempSync(join(tmpdir(), `gatehouse-${name}-`));
  const logs = join(work, 'logs');
  mkdirSync(logs);
  console.log(`logs in ${logs}`);
  return { work, logs };
}

/** Builds compared side by side come as `label=path/to/dist` arguments; without any, the usage and exit 1. */
export function requireBuilds(builds: readonly unknown[], usage: string): void {
  if (builds.length > 0) return;
  console.error(`usage: ${usage} label=path/to/dist [label=path/to/dist ...]`);
  process.exit(1);
}

export const CLIENT_ID = 'gatehouse-bench';
export const CLIENT_SECRET = 'bench-client-secret-that-is-long-enough';
const BENCH_EMAIL = 'bench@example.com';
/** Keys besides the bench's own in each key table, so lookups run against a realistic index. */
const OTHER_KEYS = 10_000;

export function direct(upstream: string): Contender {
  return { url: upstream, headers: {}, stop: async () => undefined };
}

export async function nginxProxy(upstream: string): Promise<Contender> {
  const nginx = await startNginxProxy(upstream);
  return { url: nginx.url, headers: {}, stop: () => nginx.close() };
}

// ---------------------------------------------------------------------------------------------
// Gatehouse

export interface GatehouseBench {
  port: number;
  website: string;
  provider: FaultyProvider;
  apiKey: string;
  sessionCookie: string;
  /** Writes a config for `upstream` and returns its path. */
  writeConfig(name: string, upstream: string, options?: { trustedProxies?: string[] }): string;
  /** Spawns `dist/cli.js serve` as `npx gatehouse` runs it (with `--cpu-prof` into `cpuProfDir` when given) and waits for /readyz. */
  start(
    name: string,
    configPath: string,
    options?: { cpuProfDir?: string },
  ): Promise<{ service: Service; readyMs: number }>;
  close(): Promise<void>;
}

/**
 * One Gatehouse installation for the whole run: a fixed port (the provider knows its redirect URI),
 * a SQLite file, one API key made with `gatehouse keys create`, and one session made by signing in.
 */
export async function prepareGatehouse(dirs: RunDirs, jsonUpstream: string): Promise<GatehouseBench> {
  const port = await freePort();
  const website = `http://127.0.0.1:${port}`;
  const provider = await startFaultyProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUri: `${website}/v1/auth/auth`,
    email: BENCH_EMAIL,
  });
  const keyHashSecret = randomBytes(36).toString('base64url');
  const writeConfig: GatehouseBench['writeConfig'] = (name, upstream, options = {}) => {
    const path = join(dirs.work, `gatehouse-${name}.yaml`);
    // JSON is YAML: the loader reads it as it reads any llama_config_edits.yaml.
    const config = {
      auth: { key_hash_secret: keyHashSecret },
      powerml: { website },
      auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: provider.metadataUrl },
      gateway: {
        host: '127.0.0.1',
        port,
        upstream,
        data_dir: join(dirs.work, 'gatehouse-data'),
        trusted_proxies: options.trustedProxies ?? [],
        shutdown_grace_seconds: 2,
      },
      database: { url: `sqlite:${join(dirs.work, 'gatehouse.db')}` },
    };
    writeFileSync(path, JSON.stringify(config, null, 2));
    return path;
  };
  const start: GatehouseBench['start'] = async (name, configPath, options = {}) => {
    const profile = options.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir] : [];
    const service = startProcess(
      name,
      process.execPath,
      [...profile, ...gatehouseCommand('dist', ['serve', '--config', configPath])],
      {
        logDir: dirs.logs,
      },
    );
    const readyMs = await waitForStatus(`${website}/readyz`, service);
    return { service, readyMs };
  };

  const setupConfig = writeConfig('setup', jsonUpstream);
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['dist/cli.js', 'keys', 'create', '--email', BENCH_EMAIL, '--name', 'bench', '--config', setupConfig],
    { encoding: 'utf8' },
  );
  const apiKey = /^(gth_\S+)$/m.exec(stdout)?.[1];
  if (!apiKey) throw new GatehouseError('BENCH_SETUP_FAILED', 'gatehouse keys create printed no key');

  const { service } = await start('gatehouse-setup', setupConfig);
  let sessionCookie: string | undefined;
  try {
    const browser = new Browserless();
    await followSignIn(browser, `${website}/v1/auth/login?return_to=/`);
    sessionCookie = browser.cookie(website, 'gatehouse_session');
  } finally {
    await service.stop();
  }
  if (!sessionCookie) throw new GatehouseError('BENCH_SETUP_FAILED', 'signing in to Gatehouse gave no session cookie');

  return {
    port,
    website,
    provider,
    apiKey,
    sessionCookie: `gatehouse_session=${sessionCookie}`,
    writeConfig,
    start,
    close: () => provider.close(),
  };
}

/** Gatehouse in front of the platform, identifying the caller by `headers`. */
export async function gatehouse(
  bench: GatehouseBench,
  name: string,
  configPath: string,
  headers: Record<string, string>,
): Promise<Contender> {
  const { service } = await bench.start(name, configPath);
  return { url: bench.website, headers, deniedStatus: 401, service, stop: () => service.stop() };
}

/** nginx `auth_request` asking a Gatehouse that trusts it, then proxying to the platform itself. */
export async function gatehouseForwardAuth(bench: GatehouseBench, upstream: string): Promise<Contender> {
  const { service } = await bench.start(
    'gatehouse-forward-auth',
    bench.writeConfig('forward-auth', upstream, { trustedProxies: ['127.0.0.1'] }),
  );
  try {
    const nginx = await startForwardAuth(upstream, bench.website);
    return {
      url: nginx.url,
      headers: { authorization: `Bearer ${bench.apiKey}` },
      deniedStatus: 401,
      service,
      stop: async () => {
        await nginx.close();
        await service.stop();
      },
    };
  } catch (error) {
    await service.stop();
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Peers

/** The key table the Express key peer reads: the bench key among OTHER_KEYS others, in plaintext. */
export function writePeerKeys(dirs: RunDirs, apiKey: string): string {
  const path = join(dirs.work, 'peer-keys.db');
  const db = new SqliteDatabase(path);
  db.exec('create table if not exists api_keys (key text primary key, owner_email text not null)');
  const insert = db.prepare('insert or replace into api_keys values (?, ?)');
  db.transaction(() => {
    for (let i = 0; i < OTHER_KEYS; i++)
      insert.run(`gth_${randomBytes(27).toString('base64url')}`, `user${i}@example.com`);
    insert.run(apiKey, BENCH_EMAIL);
  })();
  db.close();
  return path;
}

export async function expressKeyPeer(
  dirs: RunDirs,
  upstream: string,
  keysDb: string,
  apiKey: string,
): Promise<Contender> {
  const port = await freePort();
  const service = startProcess('express-key', process.execPath, ['bench/peers/express-key.js'], {
    logDir: dirs.logs,
    env: { PORT: String(port), UPSTREAM: upstream, KEYS_DB: keysDb },
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForStatus(`${url}/`, service, { status: 401 });
  return {
    url,
    headers: { authorization: `Bearer ${apiKey}` },
    deniedStatus: 401,
    service,
    stop: () => service.stop(),
  };
}

/**
 * Starts the express-openid-connect peer with a provider of its own (its redirect URI differs from
 * Gatehouse's), signs in through it with fetch as a browser would, and carries the `appSession`
 * cookie that sign-in produced.
 */
export async function expressOidcPeer(dirs: RunDirs, upstream: string): Promise<Contender> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const provider = await startFaultyProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUri: `${url}/callback`,
    email: BENCH_EMAIL,
  });
  const service = startProcess('express-oidc', process.execPath, ['bench/peers/express-oidc.js'], {
    logDir: dirs.logs,
    env: {
      PORT: String(port),
      UPSTREAM: upstream,
      ISSUER: provider.issuer,
      CLIENT_ID,
      CLIENT_SECRET,
      SESSION_SECRET: randomBytes(32).toString('base64url'),
    },
  });
  const stop = async () => {
    await service.stop();
    await provider.close();
  };
  try {
    await waitForStatus(`${url}/`, service, { status: 302 });
    const browser = new Browserless();
    await followSignIn(browser, `${url}/login`);
    const cookie = sessionCookies(browser, url, 'appSession');
    if (!cookie)
      throw new GatehouseError(
        'BENCH_SETUP_FAILED',
        `signing in to express-openid-connect gave no appSession cookie; ${service.logPath}`,
      );
    return { url, headers: { cookie, origin: url }, deniedStatus: 302, service, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** express-openid-connect splits a cookie over 4 kB into `name.0`, `name.1`…; this joins them back into a Cookie header. */
function sessionCookies(browser: Browserless, url: string, name: string): string | undefined {
  const whole = browser.cookie(url, name);
  if (whole) return `${name}=${whole}`;
  const parts: string[] = [];
  for (let i = 0; browser.cookie(url, `${name}.${i}`) !== undefined; i++)
    parts.push(`${name}.${i}=${browser.cookie(url, `${name}.${i}`)}`);
  return parts.length ? parts.join('; ') : undefined;
}

/** login -> provider -> callback, each hop by hand; fails unless the callback redirects onwards. */
async function followSignIn(browser: Browserless, loginUrl: string): Promise<void> {
  let url = loginUrl;
  for (let hop = 0; hop < 3; hop++) {
    const response = await browser.fetch(url);
    await response.arrayBuffer();
    const location = response.headers.get('location');
    if (response.status !== 302 || !location) {
      throw new GatehouseError('BENCH_SIGN_IN_FAILED', `sign-in stopped at ${url} with HTTP ${response.status}`);
    }
    url = new URL(location, url).href;
  }
}
