/**
 * Debian's glewlwyd (an OpenID-certified provider, SQLite backend) as a real provider for tests.
 * `startGlewlwyd` gives it a private config, a private copy of its web app and a private database
 * under one directory, starts it on 127.0.0.1 and configures it through its admin REST API:
 * scopes, the `oidc` plugin (RS256 and ES256 keys, PKCE, end session, front- and back-channel
 * logout), a user, and a confidential client whose secret holds `-_.~` (which form-encoding turns
 * into %2D... under client_secret_basic, and which glewlwyd then does not decode).
 *
 * `configureGlewlwyd` is idempotent: each object is replaced if it exists, so running it again on
 * the same directory (or after a failed run) gives the same provider. Facts that shaped it are in
 * /work/shared/notes/glewlwyd.md: the packaged web app's config.json is a symlink the static
 * server will not follow, `email`/`name` reach the ID token only when "mandatory", the plugin reads
 * `post_logout_redirect_uris` though the client schema only knows the singular, and a plugin POST
 * refused with 400 may leave a half-made instance behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { access, constants, cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { exportJWK, generateKeyPair } from 'jose';

export const GLEWLWYD_BINARY = '/usr/bin/glewlwyd';
const PACKAGED_WEBAPP = '/usr/share/glewlwyd/webapp';
const PACKAGED_SCHEMA = '/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3';
const PACKAGED_WEBAPP_CONFIG = '/etc/glewlwyd/config-2.7.json/config.json';
const MODULES = '/usr/lib/glewlwyd';
/** The packaged schema creates this administrator. */
const ADMIN = { username: 'admin', password: 'password' };
const PLUGIN = 'oidc';

export const GLEWLWYD_INSTALL = 'apt-get install -y --no-install-recommends glewlwyd sqlite3';

export const GLEWLWYD_USER = {
  username: 'ada',
  password: 'ada-password-1234',
  email: 'ada@glewlwyd.example.test',
  name: 'Ada Lovelace',
};

export const GLEWLWYD_CLIENT = {
  id: 'gatehouse',
  /** Every unreserved character RFC 6749 2.3.1 form-encoding changes or keeps: `-` `_` `.` `~`. */
  secret: 'gh-client_secret.with~unreserved-0123456789',
};

/** The plugin's signing keys; `setSigningKey` makes one the key ID tokens are signed with. */
export type GlewlwydKey = 'rsa' | 'ec';
const KIDS: Record<GlewlwydKey, string> = { rsa: 'gatehouse-rs256', ec: 'gatehouse-es256' };

export interface GlewlwydOptions {
  /** Holds the config, database, web app copy and keys; reused when it already has them. */
  dir: string;
  port: number;
  /** The gateway's public URL: its callback, logout URIs and post-logout redirect derive from it. */
  website: string;
  /** `exp` - `iat` of ID tokens (glewlwyd's access token duration); default 3600. */
  idTokenLifetimeSeconds?: number;
}

export interface Glewlwyd {
  origin: string;
  issuer: string;
  metadataUrl: string;
  /** Makes the plugin sign ID tokens (and logout tokens) with this key from now on. */
  setSigningKey(key: GlewlwydKey): Promise<void>;
  /** Registers the client for these logout channels only. */
  setLogoutChannels(channels: LogoutChannels): Promise<void>;
  /** The admin API, signed in as the packaged administrator. */
  admin(path: string, init?: RequestInit): Promise<Response>;
  /** Everything glewlwyd logged (GLEWLWYD_LOG_LEVEL=DEBUG for more). */
  log(): string;
  close(): Promise<void>;
}

export async function hasGlewlwyd(): Promise<boolean> {
  try {
    await Promise.all([GLEWLWYD_BINARY, PACKAGED_SCHEMA, PACKAGED_WEBAPP].map((path) => access(path, constants.R_OK)));
    return true;
  } catch {
    return false;
  }
}

/** Prepares `dir`, starts glewlwyd and configures it; resolves once discovery answers. */
export async function startGlewlwyd(options: GlewlwydOptions): Promise<Glewlwyd> {
  const origin = `http://127.0.0.1:${options.port}`;
  const issuer = `${origin}/api/${PLUGIN}`;
  await prepareDirectory(options.dir, origin);
  // A file, not a pipe: glewlwyd's stdio is block-buffered there, so the last lines would be missing.
  const logFile = join(options.dir, 'glewlwyd.log');
  await writeFile(logFile, '');
  const child = spawn(
    GLEWLWYD_BINARY,
    [
      '-c',
      join(options.dir, 'glewlwyd.conf'),
      '-m',
      'file',
      '-f',
      logFile,
      '-l',
      process.env.GLEWLWYD_LOG_LEVEL ?? 'INFO',
    ],
    { stdio: 'ignore' },
  );
  const readLog = () => readFileSync(logFile, 'utf8');
  const stop = () => stopProcess(child);
  try {
    await waitForHttp(`${origin}/api/auth/scheme/`, child, readLog);
    const admin = await adminSession(origin);
    const keys = await loadKeys(options.dir);
    const plugin = { issuer, keys, lifetime: options.idTokenLifetimeSeconds ?? 3600 };
    const setSigningKey = (key: GlewlwydKey) => putPlugin(admin, { ...plugin, kid: KIDS[key] });
    await configureGlewlwyd(admin, { ...options, ...plugin });
    await waitForHttp(`${issuer}/.well-known/openid-configuration`, child, readLog);
    return {
      origin,
      issuer,
      metadataUrl: `${issuer}/.well-known/openid-configuration`,
      setSigningKey,
      setLogoutChannels: (channels) => putClient(admin, options.website, channels),
      admin,
      log: readLog,
      close: stop,
    };
  } catch (error) {
    await stop();
    throw new Error(`glewlwyd did not start: ${(error as Error).message}\n${readLog().slice(-4000)}`, {
      cause: error,
    });
  }
}

type Admin = (path: string, init?: RequestInit) => Promise<Response>;

interface PluginSettings {
  issuer: string;
  /** The private JWKS, as JSON. */
  keys: string;
  lifetime: number;
  /** The key ID tokens are signed with. */
  kid?: string;
}

type Configuration = GlewlwydOptions & PluginSettings;

/**
 * Scopes, plugin, user, client and the user's consent, each replaced if present: running it twice
 * leaves the same state as running it once.
 */
export async function configureGlewlwyd(admin: Admin, config: Configuration): Promise<void> {
  for (const scope of ['openid', 'email', 'profile']) {
    await upsert(admin, '/api/scope/', scope, {
      name: scope,
      display_name: scope,
      description: `OpenID Connect scope ${scope}`,
      password_required: true,
      password_max_age: 0,
      scheme: {},
    });
  }
  await putPlugin(admin, { ...config, kid: KIDS.rsa });
  await extendClientFormat(admin);
  await upsert(admin, '/api/user/', GLEWLWYD_USER.username, {
    username: GLEWLWYD_USER.username,
    password: GLEWLWYD_USER.password,
    name: GLEWLWYD_USER.name,
    email: GLEWLWYD_USER.email,
    enabled: true,
    scope: ['openid', 'email', 'profile'],
  });
  await putClient(admin, config.website, { front: true, back: true });
  await grantConsent(config);
}

/** Which logout channels the client has registered. */
export interface LogoutChannels {
  front: boolean;
  back: boolean;
}

async function putClient(admin: Admin, website: string, channels: LogoutChannels): Promise<void> {
  await upsert(admin, '/api/client/', GLEWLWYD_CLIENT.id, {
    client_id: GLEWLWYD_CLIENT.id,
    name: 'Gatehouse',
    description: 'Gatehouse test gateway',
    enabled: true,
    confidential: true,
    client_secret: GLEWLWYD_CLIENT.secret,
    scope: ['openid', 'email', 'profile'],
    redirect_uri: [`${website}/v1/auth/auth`],
    authorization_type: ['code', 'refresh_token'],
    // Without it glewlwyd refuses every client authentication with unauthorized_client.
    token_endpoint_auth_method: ['client_secret_basic', 'client_secret_post'],
    post_logout_redirect_uris: [website],
    ...(channels.back
      ? { backchannel_logout_uri: `${website}/v1/auth/backchannel-logout`, backchannel_logout_session_required: 'true' }
      : {}),
    ...(channels.front
      ? {
          frontchannel_logout_uri: `${website}/v1/auth/frontchannel-logout`,
          frontchannel_logout_session_required: 'true',
        }
      : {}),
  });
}

/** A plugin POST refused with 400 can leave a half-made instance, so it is always deleted first. */
async function putPlugin(admin: Admin, settings: PluginSettings): Promise<void> {
  await admin(`/api/mod/plugin/${PLUGIN}`, { method: 'DELETE' });
  await expectOk(
    admin(
      '/api/mod/plugin/',
      json('POST', {
        module: 'oidc',
        name: PLUGIN,
        display_name: 'OpenID Connect',
        order_rank: 0,
        parameters: pluginParameters(settings),
      }),
    ),
    'create the oidc plugin',
  );
}

function pluginParameters({ issuer, keys, lifetime, kid = KIDS.rsa }: PluginSettings): Record<string, unknown> {
  // glewlwyd signs with the first key of the set whatever `default-kid` says, so it goes first.
  const jwks = JSON.parse(keys) as { keys: Array<{ kid: string }> };
  jwks.keys.sort((a, b) => Number(b.kid === kid) - Number(a.kid === kid));
  return {
    iss: issuer,
    'jwt-type': kid === KIDS.ec ? 'ecdsa' : 'rsa',
    'jwt-key-size': '256',
    'jwks-private': JSON.stringify(jwks),
    'default-kid': kid,
    'jwks-show': true,
    'access-token-duration': lifetime,
    'refresh-token-duration': 1209600,
    'code-duration': 600,
    'refresh-token-rolling': true,
    'allow-non-oidc': false,
    'auth-type-code-enabled': true,
    'auth-type-token-enabled': false,
    'auth-type-id-token-enabled': true,
    'auth-type-none-enabled': false,
    'auth-type-password-enabled': false,
    'auth-type-client-enabled': false,
    'auth-type-refresh-enabled': true,
    scope: [],
    'additional-parameters': [],
    claims: [],
    // Without "mandatory" the email and name never reach the ID token, whatever the scopes.
    'name-claim': 'mandatory',
    'name-claim-scope': [],
    'email-claim': 'mandatory',
    'email-claim-scope': [],
    'scope-claim': 'no',
    'allowed-scope': ['openid', 'email', 'profile'],
    'pkce-allowed': true,
    'pkce-method-plain-allowed': false,
    'session-management-allowed': true,
    'session-cookie-name': 'GLEWLWYD2_OIDC_SID',
    'session-cookie-expiration': 2419200,
    'front-channel-logout-allowed': true,
    'back-channel-logout-allowed': true,
    'secret-type': 'pairwise',
    'request-parameter-allow': false,
    'introspection-revocation-allowed': false,
    'register-client-allowed': false,
    'encrypt-out-token-allow': false,
    'service-documentation': '',
    'op-policy-uri': '',
    'op-tos-uri': '',
  };
}

/** The plugin reads `post_logout_redirect_uris` (a list), which the client schema lacks. */
async function extendClientFormat(admin: Admin): Promise<void> {
  const response = await admin('/api/mod/client/database');
  const module = (await response.json()) as { parameters: { 'data-format': Record<string, unknown> } };
  const format = module.parameters['data-format'];
  if (format.post_logout_redirect_uris) return;
  format.post_logout_redirect_uris = { multiple: true, read: true, write: true };
  await expectOk(admin('/api/mod/client/database', json('PUT', module)), 'extend the client format');
  // The running instance keeps its old format until reset.
  await expectOk(admin('/api/mod/client/database/reset', { method: 'PUT' }), 'reload the client module');
}

/** The first sign-in would stop on a consent page with every scope unticked; the user grants it here. */
async function grantConsent(config: Configuration): Promise<void> {
  const origin = new URL(config.issuer).origin;
  const user = await sessionOf(origin, GLEWLWYD_USER);
  await expectOk(
    user(`/api/auth/grant/${GLEWLWYD_CLIENT.id}`, json('PUT', { scope: 'openid email profile' })),
    'grant the client its scopes',
  );
}

async function upsert(admin: Admin, collection: string, id: string, body: Record<string, unknown>): Promise<void> {
  const existing = await admin(`${collection}${encodeURIComponent(id)}`);
  await existing.body?.cancel();
  const request =
    existing.status === 200
      ? admin(`${collection}${encodeURIComponent(id)}`, json('PUT', body))
      : admin(collection, json('POST', body));
  await expectOk(request, `write ${collection}${id}`);
}

async function adminSession(origin: string): Promise<Admin> {
  return sessionOf(origin, ADMIN);
}

async function sessionOf(origin: string, who: { username: string; password: string }): Promise<Admin> {
  const response = await fetch(`${origin}/api/auth/`, json('POST', who));
  if (response.status !== 200) throw new Error(`cannot sign in to glewlwyd as ${who.username}: ${response.status}`);
  const cookie = response.headers
    .getSetCookie()
    .map((line) => line.split(';')[0])
    .join('; ');
  return (path, init = {}) => fetch(`${origin}${path}`, { ...init, headers: { ...init.headers, cookie } });
}

function json(method: string, body: unknown): RequestInit {
  return { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

async function expectOk(request: Promise<Response>, what: string): Promise<void> {
  const response = await request;
  const text = await response.text();
  if (response.status !== 200) throw new Error(`glewlwyd refused to ${what}: ${response.status} ${text}`);
}

/** Private config, database and web app, made once per directory. */
async function prepareDirectory(dir: string, origin: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const database = join(dir, 'glewlwyd.sqlite');
  if (!(await exists(database))) {
    const db = new Database(database);
    db.exec(await readFile(PACKAGED_SCHEMA, 'utf8'));
    db.close();
  }
  const webapp = join(dir, 'webapp');
  if (!(await exists(join(webapp, 'login.html')))) {
    await rm(webapp, { recursive: true, force: true });
    // The static server ignores symlinks (a request for one hangs), and the package links
    // config.json, jQuery, Bootstrap and the fonts: copy what they point to, and write config.json.
    await cp(PACKAGED_WEBAPP, webapp, {
      recursive: true,
      dereference: true,
      filter: (source) => !source.endsWith('/config.json'),
    });
  }
  const webappConfig = JSON.parse(await readFile(PACKAGED_WEBAPP_CONFIG, 'utf8')) as Record<string, unknown>;
  await writeFile(join(webapp, 'config.json'), JSON.stringify({ ...webappConfig, lang: ['en'] }));
  await writeFile(join(dir, 'glewlwyd.conf'), glewlwydConfig(origin, database, webapp));
}

function glewlwydConfig(origin: string, database: string, webapp: string): string {
  const mime = Object.entries({
    '.html': 'text/html',
    '.css': 'text/css',
    '.js': 'application/javascript',
    '.json': 'application/json',
    '.png': 'image/png',
    '.ico': 'image/x-icon',
    '.ttf': 'font/ttf',
    '.woff': 'font/woff',
    '.woff2': 'font/woff2',
    '.svg': 'image/svg+xml',
  })
    .map(([extension, type]) => `  { extension = "${extension}"\n    mime_type = "${type}" }`)
    .join(',\n');
  return `port=${new URL(origin).port}
external_url="${origin}"
login_url="login.html"
static_files_path="${webapp}/"
static_files_mime_types = (
${mime}
)
api_prefix="api"
allow_origin="*"
cookie_secure=0
session_expiration=2419200
session_key="GLEWLWYD2_SESSION_ID"
admin_session_authentication="cookie"
profile_session_authentication="cookie"
allow_multiple_user_per_session=true
login_api_enabled=true
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="${MODULES}/user"
client_module_path="${MODULES}/client"
user_auth_scheme_module_path="${MODULES}/scheme"
plugin_module_path="${MODULES}/plugin"
use_secure_connection=false
secure_connection_key_file="/nonexistent/cert.key"
secure_connection_pem_file="/nonexistent/cert.pem"
secure_connection_ca_file="/nonexistent/ca.crt"
hash_algorithm="SHA512"
database = { type = "sqlite3"; path = "${database}"; };
`;
}

/** One RS256 and one ES256 key, made once per directory so a rerun keeps the same `kid`s. */
async function loadKeys(dir: string): Promise<string> {
  const file = join(dir, 'jwks-private.json');
  if (await exists(file)) return readFile(file, 'utf8');
  const keys = [];
  for (const [alg, kid] of [
    ['RS256', KIDS.rsa],
    ['ES256', KIDS.ec],
  ] as const) {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    keys.push({ ...(await exportJWK(privateKey)), kid, alg, use: 'sig' });
  }
  const jwks = JSON.stringify({ keys });
  await writeFile(file, jwks, { mode: 0o600 });
  return jwks;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

async function waitForHttp(url: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`glewlwyd exited with ${child.exitCode}: ${output().slice(-2000)}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await response.body?.cancel();
      if (response.status < 500) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`no answer from ${url} within 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
