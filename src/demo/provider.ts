/**
 * The bundled development OpenID provider: a real `oidc-provider` instance on 127.0.0.1 with its
 * own small login page, so `gatehouse demo` and the end-to-end tests sign in against the same
 * certified code paths a production provider runs, not a mock.
 *
 * It speaks the authorization code flow with PKCE (S256, required), signs ID tokens with an RS256
 * key generated at start, and supports RP-Initiated Logout. Everything lives in memory until
 * `close()`.
 * https://openid.net/specs/openid-connect-core-1_0.html
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { GatehouseError } from '../errors.js';

export interface DemoUser {
  sub: string;
  email: string;
  name: string;
  password: string;
}

export interface DemoClient {
  client_id: string;
  client_secret: string;
  redirect_uris: string[];
  post_logout_redirect_uris: string[];
  /** Default `['authorization_code', 'refresh_token']`; `['client_credentials']` makes a program's client. */
  grant_types?: string[];
}

/** An API that programs get JWT access tokens for, by naming it as `resource` (RFC 8707). */
export interface DemoResourceServer {
  /** The resource indicator, which becomes the token's `aud`. */
  resource: string;
  /** Space-separated scopes a client may ask for. */
  scope: string;
  /** Default 300 s. */
  accessTokenTtlSeconds?: number;
}

export interface DemoProviderOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default `[DEMO_USER]`. */
  users?: DemoUser[];
  clients: DemoClient[];
  /** Lifetime of issued ID tokens; default 3600 s. */
  idTokenTtlSeconds?: number;
  /**
   * Turns on the client credentials grant with resource indicators: a client whose `grant_types`
   * include `client_credentials` gets RFC 9068 JWT access tokens for these resources.
   */
  resourceServers?: DemoResourceServer[];
}

export interface DemoProvider {
  /** `http://127.0.0.1:PORT`, without a trailing slash. */
  issuer: string;
  /** `issuer` + `/.well-known/openid-configuration`. */
  metadataUrl: string;
  users: DemoUser[];
  /**
   * Signs every later ID token with a new RS256 key (new `kid`) and drops the old key from the
   * JWKS, as a provider does when it rotates keys; browser sessions and grants survive.
   */
  rotateSigningKey(): Promise<void>;
  /** Stops listening and drops every open connection at once. */
  close(): Promise<void>;
}

/** The account the demo login page offers, and the default when no `users` are given. */
export const DEMO_USER: DemoUser = {
  sub: 'demo-user',
  email: 'demo@example.com',
  name: 'Demo User',
  password: 'demo',
};

const DAY_SECONDS = 24 * 60 * 60;
const MAX_FORM_BYTES = 16 * 1024;
const AUTO_LOGOUT_PATH = '/session/end/auto';

/**
 * Starts the provider and resolves once it accepts connections. The issuer is
 * `http://HOST:PORT`, so the port is bound before the provider is built.
 */
export async function startDemoProvider(options: DemoProviderOptions): Promise<DemoProvider> {
  const host = options.host ?? '127.0.0.1';
  const users = options.users ?? [DEMO_USER];
  const Provider = await loadProviderClass();
  const invalidTarget = options.resourceServers ? await loadInvalidTarget() : undefined;
  const store = createMemoryAdapter();
  // Signed cookies need keys; fresh ones per run are fine for a provider that forgets on exit.
  const cookieKeys = [randomBytes(32).toString('base64url')];

  let handle: RequestListener = (_req, res) => void res.writeHead(503).end();
  const server = createServer((req, res) => handle(req, res));
  const port = await listen(server, options.port ?? 0, host);
  const issuer = `http://${host}:${port}`;

  let provider: OidcProvider;
  let forward: RequestListener;
  /** Builds a Provider around `signingKey`; the store and cookie keys are shared by all of them. */
  const install = (signingKey: JWK): void => {
    provider = new Provider(
      issuer,
      buildConfiguration({ ...options, users, signingKey, adapter: store, cookieKeys, invalidTarget }),
    );
    provider.proxy = false;
    forward = provider.callback();
  };
  install(await generateSigningKey());

  handle = (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const interaction = /^\/interaction\/([\w-]+)(\/login)?$/.exec(path);
    let work: Promise<void>;
    if (interaction && req.method === 'GET' && !interaction[2]) {
      work = showInteraction(provider, users, interaction[1] ?? '', req, res);
    } else if (interaction && req.method === 'POST' && interaction[2]) {
      work = submitLogin(provider, users, interaction[1] ?? '', req, res);
    } else if (path === AUTO_LOGOUT_PATH && req.method === 'GET') {
      work = confirmLogout(issuer, req, res);
    } else {
      forward(req, res);
      return;
    }
    work.catch((error: unknown) => failInteraction(res, error));
  };

  return {
    issuer,
    metadataUrl: `${issuer}/.well-known/openid-configuration`,
    users,
    // Rebuilding the Provider is the one way to change oidc-provider's keystore; the HTTP server,
    // issuer, store and cookie keys stay, so nothing but the key is different afterwards.
    rotateSigningKey: async () => install(await generateSigningKey()),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

// --- oidc-provider, typed as far as it is used here (the package ships no declarations) ---

interface KoaContext {
  status: number;
  type: string;
  body: unknown;
  redirect(url: string): void;
  oidc: {
    session: { state: { secret: string } };
    client?: { clientId: string };
  };
}

interface OidcInteraction {
  uid: string;
  prompt: {
    name: string;
    details: {
      missingOIDCScope?: string[];
      missingOIDCClaims?: string[];
      missingResourceScopes?: Record<string, string[]>;
    };
  };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}

interface OidcGrant {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(indicator: string, scope: string): void;
  save(): Promise<string>;
}

interface OidcProvider {
  proxy: boolean;
  callback(): RequestListener;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<OidcInteraction>;
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: Record<string, unknown>,
    options: { mergeWithLastSubmission: boolean },
  ): Promise<void>;
  Grant: {
    new (init: { accountId: string; clientId: string }): OidcGrant;
    find(id: string): Promise<OidcGrant | undefined>;
  };
}

type OidcProviderClass = new (issuer: string, configuration: object) => OidcProvider;

/**
 * Imported by a non-literal specifier so TypeScript does not demand declarations the package
 * lacks; loading on first use also keeps its Node-version notice out of commands that never start
 * the demo.
 */
async function loadProviderClass(): Promise<OidcProviderClass> {
  const specifier = 'oidc-provider';
  const module = (await import(specifier)) as { default: OidcProviderClass };
  return module.default;
}

/** oidc-provider's `invalid_target` error (RFC 8707 2), answered as a 400 rather than a failure. */
type InvalidTargetError = new () => Error;

async function loadInvalidTarget(): Promise<InvalidTargetError> {
  const specifier = 'oidc-provider';
  const module = (await import(specifier)) as { errors: { InvalidTarget: InvalidTargetError } };
  return module.errors.InvalidTarget;
}

interface ConfigurationInput {
  users: DemoUser[];
  clients: DemoClient[];
  idTokenTtlSeconds?: number;
  resourceServers?: DemoResourceServer[];
  invalidTarget?: InvalidTargetError;
  signingKey: JWK;
  adapter: AdapterFactory;
  cookieKeys: string[];
}

/**
 * Every default that oidc-provider asks integrators to replace is set here, which also keeps it
 * from printing a notice the first time each default runs.
 * https://github.com/panva/node-oidc-provider/blob/main/docs/README.md
 */
function buildConfiguration(input: ConfigurationInput): object {
  return {
    adapter: input.adapter,
    jwks: { keys: [input.signingKey] },
    clients: input.clients.map(({ grant_types = ['authorization_code', 'refresh_token'], ...client }) => ({
      ...client,
      grant_types,
      response_types: grant_types.includes('authorization_code') ? ['code'] : [],
      // Either secret method is accepted whatever is registered; basic is the spec's default.
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    // The gateway reads email and name from the ID token, not from userinfo.
    conformIdTokenClaims: false,
    findAccount: (_ctx: unknown, sub: string) => {
      const user = input.users.find((candidate) => candidate.sub === sub);
      if (!user) return undefined;
      return {
        accountId: user.sub,
        claims: () => ({ sub: user.sub, email: user.email, email_verified: true, name: user.name }),
      };
    },
    pkce: { required: () => true },
    // A refresh token for every client allowed one, without requiring `offline_access` and
    // `prompt=consent`, so the gateway's refresh path can be exercised against this provider.
    issueRefreshToken: (_ctx: unknown, client: { grantTypeAllowed(type: string): boolean }) =>
      client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: 3600,
      ClientCredentials: 300,
      AuthorizationCode: 60,
      IdToken: input.idTokenTtlSeconds ?? 3600,
      RefreshToken: 14 * DAY_SECONDS,
      Interaction: 3600,
      Session: 14 * DAY_SECONDS,
      Grant: 14 * DAY_SECONDS,
    },
    cookies: {
      keys: input.cookieKeys,
      // The gateway shares the host 127.0.0.1 and cookies ignore ports; distinct names avoid clashes.
      names: {
        session: 'demo_op_session',
        interaction: 'demo_op_interaction',
        resume: 'demo_op_resume',
      },
    },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: redirectToAutoLogout,
        postLogoutSuccessSource: renderSignedOut,
      },
      ...(input.resourceServers && resourceServerFeatures(input.resourceServers, input.invalidTarget)),
    },
    clientBasedCORS: () => false,
    renderError,
  };
}

/**
 * Client credentials for the listed resources only, each token a JWT whose `aud` is the resource
 * (RFC 9068); any other resource is `invalid_target`.
 * https://github.com/panva/node-oidc-provider/blob/main/docs/README.md#featuresresourceindicators
 */
function resourceServerFeatures(servers: DemoResourceServer[], InvalidTarget?: InvalidTargetError): object {
  return {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx: unknown, _client: unknown, oneOf?: string[]) => oneOf ?? undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx: unknown, indicator: string) => {
        const server = servers.find((candidate) => candidate.resource === indicator);
        if (!server) {
          if (InvalidTarget) throw new InvalidTarget();
          throw new GatehouseError('DEMO_UNKNOWN_RESOURCE', `no resource server ${indicator}`);
        }
        return {
          scope: server.scope,
          audience: server.resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: server.accessTokenTtlSeconds ?? 300,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  };
}

/**
 * RP-Initiated Logout asks the user to confirm with a form POST carrying an anti-forgery secret.
 * The demo confirms on the user's behalf without client-side script: it redirects to
 * AUTO_LOGOUT_PATH with that secret, which posts the confirmation server-side (`confirmLogout`).
 * https://openid.net/specs/openid-connect-rpinitiated-1_0.html#RPLogout
 */
function redirectToAutoLogout(ctx: KoaContext): void {
  const secret = encodeURIComponent(ctx.oidc.session.state.secret);
  ctx.redirect(`${AUTO_LOGOUT_PATH}?xsrf=${secret}`);
  ctx.status = 303;
}

/**
 * Replays the confirmation POST against this provider with the browser's own cookies, then hands
 * the browser the provider's answer (cookie removal and the redirect to `post_logout_redirect_uri`).
 * The secret is bound to the browser's session, so a third party cannot sign anyone out with it.
 */
async function confirmLogout(issuer: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const xsrf = new URL(req.url ?? '/', issuer).searchParams.get('xsrf') ?? '';
  const confirmation = await fetch(`${issuer}/session/end/confirm`, {
    method: 'POST',
    redirect: 'manual',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      ...(req.headers.cookie ? { cookie: req.headers.cookie } : {}),
    },
    body: new URLSearchParams({ xsrf, logout: 'yes' }),
  });
  const headers: Record<string, string | string[]> = {
    'cache-control': 'no-store',
    'set-cookie': confirmation.headers.getSetCookie(),
    'content-type': confirmation.headers.get('content-type') ?? 'text/plain; charset=utf-8',
  };
  const location = confirmation.headers.get('location');
  if (location) headers.location = location;
  res.writeHead(confirmation.status, headers).end(Buffer.from(await confirmation.arrayBuffer()));
}

// --- interactions: the login page, and consent granted without asking ---

async function showInteraction(
  provider: OidcProvider,
  users: DemoUser[],
  uid: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const details = await findInteraction(provider, uid, req, res);
  if (details.prompt.name === 'consent') {
    await grantConsent(provider, details, req, res);
    return;
  }
  const loginHint = typeof details.params.login_hint === 'string' ? details.params.login_hint : '';
  sendPage(res, 200, renderLogin({ uid, email: loginHint, hint: users[0] }));
}

async function submitLogin(
  provider: OidcProvider,
  users: DemoUser[],
  uid: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const details = await findInteraction(provider, uid, req, res);
  if (details.prompt.name !== 'login') {
    throw new GatehouseError('DEMO_INTERACTION_MISMATCH', 'this sign-in does not expect a password');
  }
  const form = await readForm(req);
  const email = (form.get('email') ?? '').trim();
  const user = findUser(users, email, form.get('password') ?? '');
  if (!user) {
    const error = 'That email and password do not match a demo account.';
    sendPage(res, 403, renderLogin({ uid, email, hint: users[0], error }));
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
}

/**
 * The demo's clients are first-party, so whatever they ask for is granted without a consent
 * screen (the pattern from oidc-provider's interaction examples).
 */
async function grantConsent(
  provider: OidcProvider,
  details: OidcInteraction,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const existing = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  const grant =
    existing ??
    new provider.Grant({
      accountId: details.session?.accountId ?? '',
      clientId: String(details.params.client_id),
    });
  const missing = details.prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

/** The interaction cookie must belong to the interaction named in the URL. */
async function findInteraction(
  provider: OidcProvider,
  uid: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<OidcInteraction> {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    throw new GatehouseError('DEMO_INTERACTION_MISMATCH', 'interaction cookie is for another sign-in');
  }
  return details;
}

function findUser(users: DemoUser[], email: string, password: string): DemoUser | undefined {
  const user = users.find((candidate) => candidate.email.toLowerCase() === email.toLowerCase());
  return user && matchesSecret(user.password, password) ? user : undefined;
}

/** Compares digests in constant time, so response timing does not reveal the password. */
function matchesSecret(expected: string, given: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(expected), digest(given));
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  req.setEncoding('utf8');
  let body = '';
  for await (const chunk of req as AsyncIterable<string>) {
    body += chunk;
    if (body.length > MAX_FORM_BYTES) {
      throw new GatehouseError('DEMO_FORM_TOO_LARGE', 'login form body is larger than 16 KiB');
    }
  }
  return new URLSearchParams(body);
}

/** An expired or replayed sign-in gets a page that says what to do; anything else is a bug. */
function failInteraction(res: ServerResponse, error: unknown): void {
  const name = error instanceof Error ? error.name : '';
  if (name === 'SessionNotFound' || (error instanceof GatehouseError && error.code.startsWith('DEMO_'))) {
    const message = 'This sign-in has expired or was already used. Go back to the application and sign in again.';
    if (!res.headersSent) sendPage(res, 400, renderMessage('Sign-in expired', message));
    return;
  }
  console.error('demo provider: interaction failed', error);
  if (!res.headersSent) sendPage(res, 500, renderMessage('Something went wrong', 'The demo provider failed.'));
}

// --- pages ---

const PAGE_STYLE = `
body{margin:0;min-height:100vh;display:grid;place-items:center;background:#f3f4f7;color:#1d2330;font:16px/1.5 system-ui,sans-serif}
main{box-sizing:border-box;width:min(22rem,calc(100vw - 2rem));padding:2rem 1.5rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.12)}
h1{margin:0 0 1rem;font-size:1.3rem}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input{box-sizing:border-box;width:100%;padding:.5rem;border:1px solid #c3c8d3;border-radius:4px;font:inherit}
button{width:100%;margin-top:1.25rem;padding:.6rem;border:0;border-radius:4px;background:#2f5bea;color:#fff;font:inherit;font-weight:600;cursor:pointer}
.error{padding:.5rem .75rem;border-radius:4px;background:#fdecec;color:#9b1c1c}
.hint{margin:1rem 0 0;color:#596275;font-size:.9rem}`;

function renderLogin(page: { uid: string; email: string; hint?: DemoUser; error?: string }): string {
  const hint = page.hint
    ? `<p class="hint">Demo account: <code>${escapeHtml(page.hint.email)}</code> / <code>${escapeHtml(page.hint.password)}</code></p>`
    : '';
  return renderDocument(
    'Gatehouse demo sign-in',
    `<h1>Gatehouse demo sign-in</h1>
${page.error ? `<p class="error" role="alert">${escapeHtml(page.error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(page.uid)}/login">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="username" required autofocus value="${escapeHtml(page.email)}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
${hint}`,
  );
}

function renderMessage(title: string, message: string): string {
  return renderDocument(title, `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(message)}</p>`);
}

function renderDocument(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${PAGE_STYLE}</style></head>
<body><main>${body}</main></body></html>`;
}

function renderSignedOut(ctx: KoaContext): void {
  ctx.type = 'html';
  ctx.body = renderMessage('Signed out', 'You are signed out of the Gatehouse demo provider.');
}

function renderError(ctx: KoaContext, out: { error?: string; error_description?: string }): void {
  ctx.type = 'html';
  ctx.body = renderMessage(out.error ?? 'error', out.error_description ?? 'The request failed.');
}

/** No script may run and no other site may frame the page (clickjacking on the password form). */
function sendPage(res: ServerResponse, status: number, html: string): void {
  res
    .writeHead(status, {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
      'x-frame-options': 'DENY',
    })
    .end(html);
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

// --- keys, storage, listening ---

async function generateSigningKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

interface StoredPayload {
  grantId?: string;
  uid?: string;
  userCode?: string;
  consumed?: number;
  [field: string]: unknown;
}

interface Adapter {
  upsert(id: string, payload: StoredPayload, expiresIn?: number): Promise<void>;
  find(id: string): Promise<StoredPayload | undefined>;
  findByUid(uid: string): Promise<StoredPayload | undefined>;
  findByUserCode(userCode: string): Promise<StoredPayload | undefined>;
  consume(id: string): Promise<void>;
  destroy(id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
}

type AdapterFactory = (model: string) => Adapter;

/**
 * oidc-provider's state (sessions, grants, codes, tokens) in one Map that outlives any single
 * Provider, so a key rotation signs nobody out. Its own memory adapter would do the same but
 * lives in a private module and warns on every start.
 * https://github.com/panva/node-oidc-provider/blob/main/example/my_adapter.js
 */
function createMemoryAdapter(): AdapterFactory {
  const records = new Map<string, { payload: StoredPayload; expiresAt: number }>();
  const read = (key: string): StoredPayload | undefined => {
    const record = records.get(key);
    if (record && record.expiresAt <= Date.now()) records.delete(key);
    return record && record.expiresAt > Date.now() ? record.payload : undefined;
  };
  const findWhere = (model: string, field: 'uid' | 'userCode', value: string) => {
    for (const [key, record] of records) {
      if (key.startsWith(`${model}:`) && record.payload[field] === value) return read(key);
    }
    return undefined;
  };
  const dropExpired = () => {
    const now = Date.now();
    for (const [key, record] of records) if (record.expiresAt <= now) records.delete(key);
  };

  return (model) => ({
    upsert: async (id, payload, expiresIn) => {
      dropExpired();
      const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
      records.set(`${model}:${id}`, { payload, expiresAt });
    },
    find: async (id) => read(`${model}:${id}`),
    findByUid: async (uid) => findWhere(model, 'uid', uid),
    findByUserCode: async (userCode) => findWhere(model, 'userCode', userCode),
    consume: async (id) => {
      const payload = read(`${model}:${id}`);
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    },
    destroy: async (id) => void records.delete(`${model}:${id}`),
    revokeByGrantId: async (grantId) => {
      for (const [key, record] of records) if (record.payload.grantId === grantId) records.delete(key);
    },
  });
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (cause) =>
      reject(new GatehouseError('DEMO_LISTEN_FAILED', `demo provider cannot listen on ${host}:${port}`, { cause })),
    );
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}
