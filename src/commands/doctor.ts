import * as client from 'openid-client';
import { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import { Agent, request } from 'undici';
import type { Config } from '../config/index.js';
import { CALLBACK_PATH } from '../oidc/routes.js';
import { issuerUrlOf } from '../oidc/provider.js';
import { openStorage } from '../storage/database.js';
import { pendingMigrations } from '../storage/migrations.js';

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do about a failure. */
  fix?: string;
}

type Check = () => Promise<Omit<CheckResult, 'name'>>;

const TIMEOUT_MS = 5_000;

async function providerCheck(config: Config): Promise<Omit<CheckResult, 'name'>> {
  const { server_metadata_url: url, client_id, client_secret, allow_insecure_http } = config.auth_provider;
  const allowHttp = url!.startsWith('http:') || allow_insecure_http;
  let discovered: client.Configuration;
  try {
    discovered = await client.discovery(issuerUrlOf(url!), client_id!, client_secret, undefined, {
      execute: allowHttp ? [client.allowInsecureRequests] : [],
      timeout: TIMEOUT_MS / 1000,
    });
  } catch (error) {
    return {
      ok: false,
      detail: `${url}: ${(error as Error).message}`,
      fix: 'check auth_provider.server_metadata_url (open it in a browser: it must be JSON whose "issuer" is the URL without /.well-known/openid-configuration)',
    };
  }
  const metadata = discovered.serverMetadata();
  const problems: string[] = [];
  if (!metadata.response_types_supported?.includes('code'))
    problems.push('the provider does not list the "code" response type');
  if (metadata.code_challenge_methods_supported && !metadata.code_challenge_methods_supported.includes('S256')) {
    problems.push('the provider does not support PKCE S256');
  }
  if (!metadata.jwks_uri) problems.push('the provider has no jwks_uri');
  if (problems.length)
    return {
      ok: false,
      detail: problems.join('; '),
      fix: 'use an OpenID Connect provider that supports the authorization code flow with PKCE',
    };
  const logout = metadata.end_session_endpoint ? 'with' : 'without';
  return { ok: true, detail: `issuer ${metadata.issuer}, code flow + S256, ${logout} RP-initiated logout` };
}

async function redirectCheck(config: Config): Promise<Omit<CheckResult, 'name'>> {
  const redirect = `${config.powerml.website}${CALLBACK_PATH}`;
  const url = new URL(redirect);
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
  if (url.protocol !== 'https:' && !loopback) {
    return {
      ok: false,
      detail: redirect,
      fix: 'providers refuse http redirect URIs outside localhost: make powerml.website https',
    };
  }
  return {
    ok: true,
    detail: `register ${redirect} as the redirect URI and ${config.powerml.website} as the post-logout URI`,
  };
}

async function upstreamCheck(config: Config): Promise<Omit<CheckResult, 'name'>> {
  const dispatcher = new Agent({ connect: { timeout: TIMEOUT_MS }, headersTimeout: TIMEOUT_MS });
  try {
    const target = `${config.gateway.upstream}/v1/models`;
    const headers = config.gateway.upstream_api_key
      ? { authorization: `Bearer ${config.gateway.upstream_api_key}` }
      : {};
    const response = await request(target, { dispatcher, headers });
    await response.body.dump();
    if (response.statusCode === 401 || response.statusCode === 403) {
      return {
        ok: false,
        detail: `${target} answered ${response.statusCode}: the platform refuses the gateway`,
        fix: 'set gateway.upstream_api_key to the key the platform was started with (e.g. vLLM --api-key)',
      };
    }
    return { ok: true, detail: `${target} answered ${response.statusCode}` };
  } catch (error) {
    return {
      ok: false,
      detail: `${config.gateway.upstream}: ${(error as { code?: string }).code ?? (error as Error).message}`,
      fix: 'check gateway.upstream and that the platform is running and reachable from this host',
    };
  } finally {
    await dispatcher.close();
  }
}

async function databaseCheck(config: Config): Promise<Omit<CheckResult, 'name'>> {
  try {
    const storage = await openStorage({ ...config.database, auto_migrate: false });
    try {
      const pending = await pendingMigrations(
        storage.db as Kysely<unknown>,
        storage.kind === 'postgres' ? config.database.schema : undefined,
      );
      if (pending.length) {
        return {
          ok: false,
          detail: `${pending.length} migration(s) pending: ${pending.join(', ')}`,
          fix: 'run gatehouse migrate (or leave database.auto_migrate true)',
        };
      }
      return { ok: true, detail: `${storage.kind} reachable, schema up to date` };
    } finally {
      await storage.close();
    }
  } catch (error) {
    return {
      ok: false,
      detail: (error as Error).message,
      fix: 'check database.url and that the database server is running',
    };
  }
}

async function redisCheck(url: string): Promise<Omit<CheckResult, 'name'>> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    await redis.ping();
    return { ok: true, detail: 'reachable' };
  } catch (error) {
    return { ok: false, detail: (error as Error).message, fix: 'check redis.url and that Redis is running' };
  } finally {
    redis.disconnect();
  }
}

/** Checks each dependency an operator must get right, each with a pass/fail line and a hint. */
export async function runDoctor(config: Config): Promise<CheckResult[]> {
  const checks: Array<[string, Check]> = [];
  if (!config.auth.disable_auth) {
    checks.push(['provider', () => providerCheck(config)], ['redirect URI', () => redirectCheck(config)]);
  }
  checks.push(['platform', () => upstreamCheck(config)], ['database', () => databaseCheck(config)]);
  const redisUrl = config.redis.url;
  if (redisUrl) checks.push(['redis', () => redisCheck(redisUrl)]);
  return Promise.all(checks.map(async ([name, check]) => ({ name, ...(await check()) })));
}

export function formatDoctor(results: CheckResult[]): string {
  return (
    results
      .map((r) => `${r.ok ? 'PASS' : 'FAIL'}  ${r.name.padEnd(13)} ${r.detail}${r.fix ? `\n      fix: ${r.fix}` : ''}`)
      .join('\n') + '\n'
  );
}
