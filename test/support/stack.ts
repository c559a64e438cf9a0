import { uniqueSchema } from './services.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { loadConfigFromObject } from '../../src/config/index.js';
import { startDemoProvider, DEMO_USER, type DemoProvider } from '../../src/demo/provider.js';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { createLogger } from '../../src/log.js';
import { buildGateway, type Gateway } from '../../src/server.js';
import { startFaultyProvider, type FaultyProvider } from './faulty-provider.js';
import { freePort } from './ports.js';

/**
 * The database every test stack uses: in-memory SQLite, or with GATEHOUSE_TEST_DATABASE=postgres
 * a fresh schema in the local PostgreSQL, so the whole suite runs against both.
 */
export function testDatabase(): Record<string, unknown> {
  if (process.env.GATEHOUSE_TEST_DATABASE !== 'postgres') return { url: 'sqlite::memory:' };
  return {
    url: process.env.GATEHOUSE_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
    schema: uniqueSchema(),
  };
}

export const CLIENT_ID = 'gatehouse-test';
export const CLIENT_SECRET = 'test-client-secret-that-is-long-enough';

export interface RunningGateway {
  url: string;
  gateway: Gateway;
  /** Every log line the gateway wrote, as text: tests scan it for leaked secrets. */
  logs: string[];
  close(): Promise<void>;
}

/** Starts a gateway on a free 127.0.0.1 port with the given config edits (website defaults to its own URL). */
export async function startGateway(
  edits: (website: string) => Record<string, unknown>,
  port?: number,
): Promise<RunningGateway> {
  const listenPort = port ?? (await freePort());
  const website = `http://127.0.0.1:${listenPort}`;
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const config = loadConfigFromObject(
    deepMerge(
      {
        gateway: { host: '127.0.0.1', port: listenPort, data_dir: mkdtempSync(join(tmpdir(), 'gatehouse-test-')) },
        database: testDatabase(),
      },
      edits(website),
    ),
    'test',
  );
  const gateway = await buildGateway(config, createLogger('debug', sink));
  await gateway.app.listen({ host: '127.0.0.1', port: listenPort });
  await gateway.providerAttempted;
  return { url: website, gateway, logs, close: () => gateway.close() };
}

export interface Stack extends RunningGateway {
  platform: SamplePlatform;
}

export interface DemoStack extends Stack {
  provider: DemoProvider;
}

export interface FaultyStack extends Stack {
  provider: FaultyProvider;
}

/** Config edits for a gateway at `website` signing in through the provider, in front of `upstream`, plus `extra`. */
export function signInThrough(
  website: string,
  metadataUrl: string,
  upstream: string,
  extra: Record<string, unknown>,
): Record<string, unknown> {
  return deepMerge(
    {
      powerml: { website },
      auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: metadataUrl },
      gateway: { upstream },
    },
    extra,
  );
}

/**
 * Starts the sample platform, a provider made for the gateway's future URL, and the gateway in
 * front of the platform, signing in through that provider.
 */
async function startStack<P extends { metadataUrl: string; close(): Promise<void> }>(
  startProvider: (website: string) => Promise<P>,
  extra: Record<string, unknown>,
  platformChunkDelayMs = 20,
): Promise<Stack & { provider: P }> {
  const port = await freePort();
  const platform = await startSamplePlatform({ chunkDelayMs: platformChunkDelayMs });
  const provider = await startProvider(`http://127.0.0.1:${port}`);
  const running = await startGateway(
    (website) => signInThrough(website, provider.metadataUrl, platform.url, extra),
    port,
  );
  return {
    ...running,
    platform,
    provider,
    async close() {
      await running.close();
      await Promise.all([platform.close(), provider.close()]);
    },
  };
}

/** Gateway + the bundled demo provider (real oidc-provider) + the sample platform. */
export function startDemoStack(extra: Record<string, unknown> = {}, platformChunkDelayMs = 20): Promise<DemoStack> {
  return startStack(
    (website) =>
      startDemoProvider({
        clients: [
          {
            client_id: CLIENT_ID,
            client_secret: CLIENT_SECRET,
            redirect_uris: [`${website}/v1/auth/auth`],
            post_logout_redirect_uris: [website],
          },
        ],
      }),
    extra,
    platformChunkDelayMs,
  );
}

/** Gateway + a provider that signs deliberately wrong tokens on demand + the sample platform. */
export function startFaultyStack(extra: Record<string, unknown> = {}): Promise<FaultyStack> {
  return startStack(
    (website) =>
      startFaultyProvider({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUri: `${website}/v1/auth/auth` }),
    extra,
  );
}

export { DEMO_USER };

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    out[key] = isPlainObject(current) && isPlainObject(value) ? deepMerge(current, value) : value;
  }
  return out;
}
