/**
 * `gatehouse doctor`: one line per thing an operator must get right before the first sign-in, each
 * a real probe of it, with the cause, the address and a fix under every failure. It reads and asks,
 * and changes nothing: no database file, schema or table is created, no migration applied.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Redis } from 'ioredis';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import * as client from 'openid-client';
import { Agent, request } from 'undici';
import { signInSettingsOf, type Config, type SignInProvider } from '../config/index.js';
import { isLoopbackHost } from '../config/rules.js';
import { createLogger } from '../log.js';
import { ProviderConnection, issuerUrlOf } from '../oidc/provider.js';
import { callbackPathOf } from '../oidc/providers.js';
import { pendingMigrations } from '../storage/migrations.js';
import { addressOf, describeReachFailure } from './reach.js';

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do about a failure. */
  fix?: string;
}

type Verdict = Omit<CheckResult, 'name'>;

const TIMEOUT_MS = 5_000;
/** The model list is read for its names only; a platform's list is far smaller. */
const MAX_MODEL_LIST_BYTES = 1024 * 1024;
const MODELS_NAMED = 5;
/** Text from a provider's error answer shown in a line: enough to recognise, not a page. */
const MAX_DESCRIPTION = 120;

const fail = (detail: string, fix: string): Verdict => ({ ok: false, detail, fix });
const pass = (detail: string): Verdict => ({ ok: true, detail });

/** One provider as doctor probes it: its settings, where they are in the file, and the website. */
interface ProbedProvider {
  settings: SignInProvider;
  /** `auth_provider`, or `auth_providers[1]`: where fixes point. */
  key: string;
  website: string;
}

/**
 * Checks each dependency an operator must get right, each with a pass/fail line and a fix; each
 * provider's lines carry its id when there are several.
 */
export async function runDoctor(config: Config): Promise<CheckResult[]> {
  const checks: Array<[string, Promise<Verdict>]> = [];
  const signIn = signInSettingsOf(config);
  const providers = signIn?.providers ?? [];
  for (const [index, settings] of providers.entries()) {
    const probed: ProbedProvider = {
      settings,
      key: settings.shorthand ? 'auth_provider' : `auth_providers[${index}]`,
      website: signIn!.website,
    };
    const label = (name: string) => (providers.length > 1 ? `${name} ${settings.id}` : name);
    const discovered = discover(probed);
    checks.push(
      [label('provider'), discovered.then((found) => found.verdict)],
      [label('client secret'), discovered.then((found) => (found.metadata ? credentialsCheck(probed) : skipped()))],
      [label('redirect URI'), discovered.then((found) => redirectCheck(probed, found.metadata))],
    );
  }
  checks.push(['platform', upstreamCheck(config)], ['database', databaseCheck(config)]);
  const redisUrl = config.redis.url;
  if (redisUrl) checks.push(['redis', redisCheck(redisUrl)]);
  return Promise.all(checks.map(async ([name, check]) => ({ name, ...(await check) })));
}

export function formatDoctor(results: CheckResult[]): string {
  // Names grow with a provider's id ("client secret partners"); the details stay in one column.
  const width = Math.max(13, ...results.map((r) => r.name.length));
  return (
    results
      .map(
        (r) => `${r.ok ? 'PASS' : 'FAIL'}  ${r.name.padEnd(width)} ${r.detail}${r.fix ? `\n      fix: ${r.fix}` : ''}`,
      )
      .join('\n') + '\n'
  );
}

function skipped(): Verdict {
  return fail('not checked: the provider could not be discovered', 'fix the provider line first');
}

// --- the provider ---

interface Discovery {
  verdict: Verdict;
  metadata?: client.ServerMetadata;
}

async function discover(provider: ProbedProvider): Promise<Discovery> {
  const { server_metadata_url: url, client_id, client_secret } = provider.settings;
  let metadata: client.ServerMetadata;
  try {
    const discovered = await client.discovery(issuerUrlOf(url), client_id, client_secret, undefined, {
      execute: allowsHttp(provider.settings) ? [client.allowInsecureRequests] : [],
      timeout: TIMEOUT_MS / 1000,
    });
    metadata = discovered.serverMetadata();
  } catch (error) {
    const reached = describeReachFailure(error, addressOf(url));
    return {
      verdict: fail(
        `cannot load ${url}: ${reached.cause}`,
        `${reached.fix}; ${provider.key}.server_metadata_url must be JSON whose "issuer" is the URL without /.well-known/openid-configuration`,
      ),
    };
  }
  const problems: string[] = [];
  if (!metadata.response_types_supported?.includes('code')) {
    problems.push('the provider does not list the "code" response type');
  }
  if (metadata.code_challenge_methods_supported && !metadata.code_challenge_methods_supported.includes('S256')) {
    problems.push('the provider does not support PKCE S256');
  }
  if (!metadata.jwks_uri) problems.push('the provider has no jwks_uri');
  if (!metadata.authorization_endpoint || !metadata.token_endpoint) {
    problems.push('the provider has no authorization or token endpoint');
  }
  if (problems.length) {
    return {
      verdict: fail(
        problems.join('; '),
        'use an OpenID Connect provider that supports the authorization code flow with PKCE',
      ),
    };
  }
  const logout = metadata.end_session_endpoint ? 'with' : 'without';
  return {
    verdict: pass(`issuer ${metadata.issuer}, code flow + S256, ${logout} RP-initiated logout`),
    metadata,
  };
}

function allowsHttp(settings: SignInProvider): boolean {
  return settings.server_metadata_url.startsWith('http:') || settings.allow_insecure_http;
}

/**
 * Redeems a made-up authorization code, authenticating as the gateway will. A provider checks the
 * client before the code (RFC 6749 5.2), so `invalid_grant` means the credentials were accepted and
 * `invalid_client` or `unauthorized_client` that they were not.
 */
async function credentialsCheck(provider: ProbedProvider): Promise<Verdict> {
  const { client_id, client_secret, server_metadata_url, token_endpoint_auth_method } = provider.settings;
  const connection = new ProviderConnection(
    {
      metadataUrl: server_metadata_url,
      clientId: client_id,
      clientSecret: client_secret,
      allowHttp: allowsHttp(provider.settings),
      tokenEndpointAuthMethod: token_endpoint_auth_method,
      configKey: provider.key,
    },
    createLogger('silent'),
  );
  await connection.whenAttempted();
  try {
    if (!connection.ready) return fail(`not checked: ${connection.problem}`, 'fix the provider line first');
    const endpoint = connection.configuration().serverMetadata().token_endpoint!;
    try {
      // As a sign-in would: with the method the gateway picks, and its one fallback to the other.
      await connection.tokenRequest((configuration) =>
        client.genericGrantRequest(configuration, 'authorization_code', {
          code: `gatehouse-doctor-${randomBytes(16).toString('hex')}`,
          redirect_uri: `${provider.website}${callbackPathOf(provider.settings)}`,
          code_verifier: randomBytes(32).toString('base64url'),
        }),
      );
      return fail(
        `${endpoint} accepted a made-up authorization code`,
        'the provider does not check authorization codes: do not use it',
      );
    } catch (error) {
      const answer = await providerAnswer(error);
      if (answer === undefined) {
        const reached = describeReachFailure(error, addressOf(endpoint));
        return fail(`cannot reach the token endpoint: ${reached.cause}`, reached.fix);
      }
      // glewlwyd names an unknown code `invalid_code`, past the client check all the same.
      if (answer.error === 'invalid_grant' || answer.error === 'invalid_code') {
        const method = connection.clientAuthMethod;
        return pass(
          `client ${client_id} accepted by ${endpoint} with ${method} (a made-up code was refused as ${answer.error})`,
        );
      }
      if (answer.error === 'invalid_client' || answer.error === 'unauthorized_client') {
        const other =
          token_endpoint_auth_method === 'client_secret_post' ? 'client_secret_basic' : 'client_secret_post';
        return fail(
          `client ${client_id} rejected by ${endpoint}: ${answer.error}${answer.description}`,
          `check ${provider.key}.client_id and ${provider.key}.client_secret against the client registered at the ` +
            'provider; if they are right, the provider may expect them sent the other way: set ' +
            `${provider.key}.token_endpoint_auth_method: ${other}`,
        );
      }
      return pass(
        `cannot tell whether ${endpoint} accepts the client: it answered a made-up code with ` +
          `${answer.error}${answer.description} rather than invalid_grant or invalid_client`,
      );
    }
  } finally {
    connection.close();
  }
}

/** The OAuth error a provider answered with, or undefined when no answer came. */
async function providerAnswer(error: unknown): Promise<{ error: string; description: string } | undefined> {
  if (error instanceof client.ResponseBodyError) {
    return { error: error.error, description: describeDescription(error.error_description) };
  }
  // A 401 with WWW-Authenticate (RFC 6749 5.2 for Basic) is raised as a challenge; its body still says why.
  if (error instanceof client.WWWAuthenticateChallengeError) {
    const body = (await error.response.json().catch(() => ({}))) as { error?: unknown; error_description?: unknown };
    const code = typeof body.error === 'string' ? body.error : 'invalid_client';
    return { error: code, description: describeDescription(body.error_description) };
  }
  return undefined;
}

function describeDescription(description: unknown): string {
  if (typeof description !== 'string' || description === '') return '';
  return ` ("${description.length > MAX_DESCRIPTION ? `${description.slice(0, MAX_DESCRIPTION - 3)}...` : description}")`;
}

/**
 * What can be known about the redirect URI without a person signing in: that it is https (or
 * loopback), and whether the provider's authorization endpoint takes it for this client. A provider
 * shows an error page (400) for a redirect URI it does not know (RFC 6749 4.1.2.1) rather than
 * sending the browser there, and otherwise answers with its sign-in page or a redirect to it.
 */
async function redirectCheck(provider: ProbedProvider, metadata: client.ServerMetadata | undefined): Promise<Verdict> {
  const { client_id, scopes } = provider.settings;
  const redirect = `${provider.website}${callbackPathOf(provider.settings)}`;
  const url = new URL(redirect);
  if (url.protocol !== 'https:' && !isLoopbackHost(url.hostname)) {
    return fail(redirect, 'providers refuse http redirect URIs outside localhost: make powerml.website https');
  }
  const register = `register ${redirect} as a redirect URI of client ${client_id} at the provider`;
  if (!metadata?.authorization_endpoint) {
    return fail(`${redirect}: not checked, the provider could not be discovered`, 'fix the provider line first');
  }
  const authorize = new URL(metadata.authorization_endpoint);
  authorize.search = new URLSearchParams({
    response_type: 'code',
    client_id,
    redirect_uri: redirect,
    scope: scopes.join(' '),
    state: randomBytes(16).toString('base64url'),
    nonce: randomBytes(16).toString('base64url'),
    code_challenge: randomBytes(32).toString('base64url'),
    code_challenge_method: 'S256',
  }).toString();
  const dispatcher = new Agent({ connect: { timeout: TIMEOUT_MS }, headersTimeout: TIMEOUT_MS });
  try {
    // undici's request follows no redirect: the first answer is the provider's own.
    const response = await request(authorize, { dispatcher });
    await response.body.dump();
    const status = response.statusCode;
    const location = [response.headers.location].flat()[0];
    const error =
      location && status >= 300 && status < 400 ? new URL(location, authorize).searchParams.get('error') : null;
    if (error && location!.startsWith(redirect)) {
      return fail(
        `${redirect}: accepted, but the provider sent the sign-in back with error=${error}`,
        `allow the authorization code flow and the scopes ${scopes.join(' ')} for client ${client_id}`,
      );
    }
    // Some providers (Auth0) redirect to an error page of their own rather than answering 400.
    if (status >= 400 || error) {
      return fail(
        `${redirect}: the provider's authorization endpoint answered ${status}${error ? ` (error=${error})` : ''} to a sign-in request with it, ` +
          `so it is not registered for client ${client_id} (or the client is unknown)`,
        register,
      );
    }
    return pass(
      `${redirect} accepted by the provider's authorization endpoint (${status}); ` +
        `register ${provider.website} as the post-logout URI`,
    );
  } catch (error) {
    const reached = describeReachFailure(error, addressOf(authorize));
    return fail(`cannot reach the authorization endpoint: ${reached.cause}`, reached.fix);
  } finally {
    await dispatcher.close();
  }
}

// --- the platform ---

async function upstreamCheck(config: Config): Promise<Verdict> {
  const dispatcher = new Agent({ connect: { timeout: TIMEOUT_MS }, headersTimeout: TIMEOUT_MS });
  const target = `${config.gateway.upstream}/v1/models`;
  try {
    const headers = config.gateway.upstream_api_key
      ? { authorization: `Bearer ${config.gateway.upstream_api_key}` }
      : {};
    const response = await request(target, { dispatcher, headers });
    const status = response.statusCode;
    if (status === 401 || status === 403) {
      await response.body.dump();
      return fail(
        `${target} answered ${status}: the platform refuses the gateway`,
        'set gateway.upstream_api_key to the key the platform was started with (e.g. vLLM --api-key)',
      );
    }
    if (status === 404) {
      await response.body.dump();
      return fail(
        `${target} answered 404: no model list there`,
        'gateway.upstream must be the root URL of an OpenAI-compatible platform (the one whose /v1/models lists ' +
          'the models), without /v1 or another path the clients send themselves',
      );
    }
    if (status < 200 || status >= 300) {
      await response.body.dump();
      return fail(`${target} answered ${status}`, "look at the platform's log: it is not ready to serve");
    }
    return pass(`${target} answered ${status}${await describeModels(response.body)}`);
  } catch (error) {
    const reached = describeReachFailure(error, addressOf(config.gateway.upstream));
    return fail(`${target}: ${reached.cause}`, `${reached.fix} (gateway.upstream)`);
  } finally {
    await dispatcher.close();
  }
}

/** ", listing 2 models: a, b" from an OpenAI model list; empty when the body is not one. */
async function describeModels(body: AsyncIterable<Buffer> & { dump(): Promise<void> }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_MODEL_LIST_BYTES) return '';
    chunks.push(chunk);
  }
  try {
    const { data } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { data?: unknown };
    if (!Array.isArray(data)) return '';
    const ids = data.map((model: { id?: unknown }) => (typeof model?.id === 'string' ? model.id : '?'));
    const named = ids.slice(0, MODELS_NAMED).join(', ') + (ids.length > MODELS_NAMED ? ', ...' : '');
    return `, listing ${ids.length} model${ids.length === 1 ? '' : 's'}${ids.length ? `: ${named}` : ''}`;
  } catch {
    return '';
  }
}

// --- the database and Redis ---

async function databaseCheck(config: Config): Promise<Verdict> {
  const { url } = config.database;
  return url.startsWith('sqlite:') ? sqliteCheck(config) : postgresCheck(config);
}

/** Pending migrations are a failure only when serve will not apply them itself. */
function migrationsVerdict(reachable: string, pending: string[], config: Config): Verdict {
  if (pending.length === 0) return pass(`${reachable}, schema up to date`);
  const list = `${pending.length} migration${pending.length === 1 ? '' : 's'} pending (${pending.join(', ')})`;
  if (config.database.auto_migrate)
    return pass(`${reachable}, ${list}: serve applies them at start (database.auto_migrate)`);
  return fail(`${reachable}, ${list}`, 'run gatehouse migrate before serve, or set database.auto_migrate: true');
}

async function sqliteCheck(config: Config): Promise<Verdict> {
  const location = config.database.url.slice('sqlite:'.length);
  if (location === ':memory:') return pass('SQLite in memory: nothing is kept across restarts');
  const path = resolve(location);
  if (!existsSync(path)) {
    const parent = nearestExisting(dirname(path));
    if (!writable(parent)) {
      return fail(
        `SQLite file ${path} does not exist, and ${parent} is not writable by this user, so serve cannot create it`,
        'point database.url at a writable directory (sqlite:/var/lib/gatehouse/gatehouse.db in the image), or make it writable',
      );
    }
    if (!config.database.auto_migrate) {
      return fail(
        `SQLite file ${path} does not exist yet`,
        'run gatehouse migrate to create it, or set database.auto_migrate: true',
      );
    }
    return pass(`SQLite file ${path} does not exist yet: serve creates it and applies the migrations`);
  }
  if (!writable(path) || !writable(dirname(path))) {
    return fail(
      `SQLite file ${path} (or its directory) is not writable by this user`,
      'give this user write access to the file and its directory: SQLite writes a journal beside it',
    );
  }
  let database: SqliteDatabase.Database;
  try {
    database = new SqliteDatabase(path, { readonly: true, fileMustExist: true });
  } catch (error) {
    return fail(`cannot open SQLite file ${path}: ${(error as Error).message}`, 'check database.url');
  }
  const db = new Kysely<unknown>({ dialect: new SqliteDialect({ database }) });
  try {
    return migrationsVerdict(`SQLite file ${path}`, await pendingMigrations(db), config);
  } catch (error) {
    return fail(
      `cannot read SQLite file ${path}: ${(error as Error).message}`,
      'check that it is a Gatehouse database',
    );
  } finally {
    await db.destroy();
  }
}

async function postgresCheck(config: Config): Promise<Verdict> {
  const { url, schema } = config.database;
  const address = addressOf(url);
  const { default: pg } = await import('pg');
  const connection = { connectionString: url, connectionTimeoutMillis: TIMEOUT_MS };
  const probe = new pg.Client(connection);
  probe.on('error', () => undefined);
  try {
    await probe.connect();
  } catch (error) {
    if (
      typeof (error as { code?: unknown }).code === 'string' &&
      /^[0-9A-Z]{5}$/.test((error as { code: string }).code)
    ) {
      // A PostgreSQL answer (28P01 wrong password, 3D000 no such database): its message names it.
      return fail(
        `PostgreSQL at ${address}: ${(error as Error).message}`,
        'check the user, password and database in database.url',
      );
    }
    const reached = describeReachFailure(error, address);
    return fail(`PostgreSQL: ${reached.cause}`, `${reached.fix} (database.url)`);
  }
  try {
    if (schema) {
      const found = await probe.query('select 1 from pg_namespace where nspname = $1', [schema]);
      if (found.rowCount === 0) {
        return config.database.auto_migrate
          ? pass(
              `PostgreSQL at ${address}, schema ${schema} not created yet: serve creates it and applies the migrations`,
            )
          : fail(
              `PostgreSQL at ${address}, schema ${schema} does not exist`,
              'run gatehouse migrate, or set database.auto_migrate: true',
            );
      }
    }
  } finally {
    await probe.end().catch(() => undefined);
  }
  const pool = new pg.Pool({ ...connection, max: 1, ...(schema ? { options: `-c search_path=${schema}` } : {}) });
  pool.on('error', () => undefined);
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  try {
    return migrationsVerdict(`PostgreSQL at ${address}`, await pendingMigrations(db, schema), config);
  } catch (error) {
    return fail(
      `PostgreSQL at ${address}: ${(error as Error).message}`,
      'check the grants of the user in database.url',
    );
  } finally {
    await db.destroy();
  }
}

/** The path itself or the closest directory above it that exists. */
function nearestExisting(path: string): string {
  let at = path;
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at);
  return at;
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

async function redisCheck(url: string): Promise<Verdict> {
  const address = addressOf(url);
  // ioredis rejects with "Connection is closed."; what closed it came as an `error` event.
  let lastError: Error | undefined;
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', (error: Error) => (lastError = error));
  try {
    await redis.connect();
    await redis.ping();
    return pass(`${address} answered PING`);
  } catch (error) {
    const reply = (error as Error).name === 'ReplyError' ? (error as Error).message : undefined;
    if (reply) return fail(`Redis at ${address} answered: ${reply}`, 'check the password (and user) in redis.url');
    const reached = describeReachFailure(lastError ?? error, address);
    return fail(`Redis: ${reached.cause}`, `${reached.fix} (redis.url)`);
  } finally {
    redis.disconnect();
  }
}
