import { createServer, type RequestListener } from 'node:http';
import fastifyCookie from '@fastify/cookie';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { registerAdminRoutes } from './routes/admin.js';
import { createBudgets } from './budgets/setup.js';
import { AuditLog } from './audit/log.js';
import { signInSettingsOf, type Config, type SignInSettings } from './config/index.js';
import { createClientAddressing, trustedRanges, type ClientAddressing } from './http/client.js';
import { registerBodyParsers } from './http/body-parsers.js';
import { deferredSchemaCompilers } from './http/deferred-schemas.js';
import { sendApiError, writeApiError } from './http/errors.js';
import { wantsPage } from './http/challenge.js';
import { createFailureAnswer } from './http/failure.js';
import { gatewayPaths } from './http/gateway-paths.js';
import { requestIdFor } from './http/request-id.js';
import { createAccessLog } from './http/access-log.js';
import { registerHealthRoutes, type ReadinessCheck } from './http/health.js';
import { FailedAuthLimiter } from './identity/failure-limiter.js';
import { createIdentifier } from './identity/identify.js';
import { apiKeyLoader, sessionLoader } from './identity/loaders.js';
import { jwtBearerLoader } from './identity/jwt-bearer.js';
import { loadKeyHashSecret } from './keys/hash-secret.js';
import { registerKeyRoutes } from './routes/keys.js';
import { ApiKeyStore } from './keys/store.js';
import { ApiKeyVerifier, type StaticKey } from './keys/verify.js';
import type { Logger } from './log.js';
import { purgeUsedLogoutTokens } from './oidc/backchannel-logout.js';
import { purgeExpiredLoginFlows } from './oidc/login.js';
import { createProvidersRefresher, SignInProviders } from './oidc/providers.js';
import { registerAuthRoutes } from './oidc/routes.js';
import { compileAccessRules } from './policy/access.js';
import { registerForwardAuth } from './routes/forward-auth.js';
import { registerMeRoute } from './routes/me.js';
import { registerDeviceRoutes } from './routes/device.js';
import { DeviceFlow } from './device/flow.js';
import { DeviceStore } from './device/store.js';
import { createForwarder } from './proxy/forward.js';
import { createPlatformHandler, type PlatformHandlerOptions } from './proxy/handler.js';
import { InFlightRequests } from './proxy/in-flight.js';
import { cookieNamesFor } from './sessions/cookies.js';
import { deriveSealingKey } from './sessions/sealing.js';
import { countActiveSessions, SessionStore } from './sessions/store.js';
import { openStorage, type Db, type Storage } from './storage/database.js';
import { openSharedState, type SharedState } from './storage/shared-state.js';
import { recordSignIn, setSignInHook, updateUserAccess } from './users/store.js';
import { registerScimRoutes } from './routes/scim.js';
import { linkAtSignIn } from './scim/link.js';
import { onProviderRefusal } from './users/provider-refusal.js';
import { ScimStore } from './scim/store.js';
import type { Metrics } from './metrics/metrics.js';
import { noMetrics, type MetricsSink } from './metrics/sink.js';
import { RateLimiter } from './limits/rate-limiter.js';
import { createPlatformControls, type PlatformControls } from './proxy/platform-controls.js';
import { createDecide, type Decide } from './policy/decide.js';
import { compilePathRules } from './policy/paths.js';
import { UsageRecorder } from './usage/recorder.js';
import { registerAssets, sendRefusalPage } from './web/pages.js';
import { registerSignedOutPage } from './web/signed-out.js';

export interface Gateway {
  app: FastifyInstance;
  /** Prometheus figures; only when gateway.metrics_port is set. */
  metrics?: Metrics;
  /** Resolves once the provider's first discovery attempt has finished (ready or not). */
  providerAttempted: Promise<void>;
  close(): Promise<void>;
}

const PURGE_INTERVAL_MS = 10 * 60_000;

export const AUTH_DISABLED_WARNING =
  'auth.disable_auth is true: every request is forwarded to the platform without sign-in';
export const TEST_TOKEN_WARNING = 'auth.test_token is set: anyone holding it is let in as auth.test_token_email';

/** How long an idle client connection is kept open; longer than the usual 60 s of load balancers. */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;

/** Composes the gateway from its parts; holds no logic of its own. */
export async function buildGateway(config: Config, log: Logger): Promise<Gateway> {
  const storage = await openStorage(config.database);
  const shared = await openSharedState(storage, config.redis, log);
  const signInSettings = signInSettingsOf(config);
  const cookies = cookieNamesFor(signInSettings?.website.startsWith('https:') ?? false);
  const inFlight = new InFlightRequests();
  const prometheus =
    config.gateway.metrics_port === undefined
      ? undefined
      : new (await import('./metrics/metrics.js')).Metrics(
          () => countActiveSessions(storage.db),
          config.gateway.metrics_models,
        );
  const metrics: MetricsSink = prometheus ?? noMetrics;
  const usage = new UsageRecorder(storage.db, log, { requests: metrics.usageRequests, tokens: metrics.usageTokens });
  const audit = new AuditLog(storage.db, log, (entry) => {
    if (entry.event === 'sign_in') metrics.signIns.inc({ result: 'success', reason: '' });
    if (entry.event === 'sign_in_failed')
      metrics.signIns.inc({ result: 'failure', reason: String(entry.detail?.reason) });
  });
  const forwarder = createForwarder({
    upstream: config.gateway.upstream,
    upstreamApiKey: config.gateway.upstream_api_key,
    gatewayCookies: [cookies.session, cookies.loginFlow],
    stripHeaders: config.gateway.strip_headers,
    upstreamCookies: config.gateway.upstream_cookies,
    inFlight,
    headersTimeoutMs: config.gateway.upstream_headers_timeout_seconds * 1000,
    idleTimeoutMs: config.gateway.upstream_idle_timeout_seconds * 1000,
    log,
    onUpstreamHeaders: (seconds) => metrics.upstreamSeconds.observe(seconds),
    onAnswered: prometheus && ((answer) => prometheus.observeAnswer(answer)),
  });
  const { trusted_proxies: trustedProxies } = config.gateway;

  const answerFailure = createFailureAnswer(audit, metrics);
  const isGatewayPath = gatewayPaths(signInSettings !== undefined, config.scim.enabled);
  // Replaced below, once the parts it uses exist; nothing is served before the gateway is built.
  let servePlatform: RequestListener = (_request, response) =>
    writeApiError(response, 503, 'starting', 'This Gatehouse instance is starting; retry shortly.', {
      'retry-after': '1',
    });
  let closing = false;

  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // Two info lines per proxied request would cost more than the proxying; failures are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: (request) => requestIdFor(request.headers),
    // The gateway's own pages and routes go through Fastify; the platform's paths go straight to
    // the platform handler, which needs none of its routing, hooks or reply machinery.
    serverFactory: (serveGateway) => {
      // Node checks the headers and request timeouts only this often (30 s by default).
      const server = createServer({ connectionsCheckingInterval: 1_000 }, (request, response) =>
        isGatewayPath(request.url) ? serveGateway(request, response) : servePlatform(request, response),
      );
      server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
      return server;
    },
    return503OnClosing: true,
    // X-Forwarded-For is believed only from the proxies the operator named.
    trustProxy: trustedProxies.length ? trustedRanges(trustedProxies) : false,
    // A typo such as "expires_in" must be an error, not silently dropped; "30" is not a number.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
    schemaController: { compilersFactory: deferredSchemaCompilers },
  });
  // Slow clients (slowloris) must not hold connections open: request headers get 20 s, the whole
  // request (not the response, which may stream for minutes) 5 minutes.
  app.server.headersTimeout = 20_000;
  app.server.requestTimeout = 300_000;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  app.setErrorHandler((error, request, reply) => {
    const answer = answerFailure(error, request);
    // People get a page they can read and leave; programs the OpenAI-shaped JSON they can parse.
    if (wantsPage(request)) return sendRefusalPage(reply.headers(answer.headers), answer.status, answer.message);
    return sendApiError(reply, answer.status, answer.code, answer.message, answer.headers);
  });
  app.setNotFoundHandler((request, reply) => {
    const message = `Gatehouse has no ${request.method} ${request.url.split('?')[0]?.slice(0, 200)}.`;
    if (wantsPage(request)) return sendRefusalPage(reply, 404, message);
    return sendApiError(reply, 404, 'not_found', message);
  });
  // Set first, so refusals, 404s and errors carry it too.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    done();
  });
  const logAccess = config.gateway.access_log ? createAccessLog(log) : undefined;
  // The callback form: an async hook costs a promise on every request.
  app.addHook('onResponse', (request, reply, done) => {
    metrics.requests.inc({
      route: routeClassOf(request.url),
      status: reply.statusCode,
      auth: request.identity?.method ?? 'none',
    });
    logAccess?.({
      method: request.method,
      url: request.url,
      status: reply.statusCode,
      durationMs: reply.elapsedTime,
      requestId: request.id,
      clientAddress: request.ip,
      identity: request.identity,
    });
    done();
  });
  await app.register(fastifyCookie);
  await registerBodyParsers(app);
  registerAssets(app);

  const checks: ReadinessCheck[] = [
    { name: 'database', check: () => storage.ping().then(() => undefined) },
    ...shared.checks,
  ];
  const { redis } = shared;
  if (redis)
    checks.push({
      name: 'redis',
      check: async () => (redis.status === 'ready' ? undefined : `redis is ${redis.status}`),
      // Without Redis the database answers every lookup: a replica taken out of the load balancer
      // for it would turn a slowdown into an outage.
      optional: true,
    });
  const warnings: string[] = [];
  const client = createClientAddressing(trustedProxies);
  const platformParts: Omit<PlatformHandlerOptions, 'gate'> = {
    forwarder,
    client,
    answerFailure,
    log,
    isClosing: () => closing,
    logAccess,
    onFinished: prometheus ? (status, auth) => prometheus.requests.inc({ route: 'platform', status, auth }) : undefined,
  };
  let signIn: SignIn | undefined;
  if (!signInSettings) {
    warnings.push(AUTH_DISABLED_WARNING);
    log.warn(AUTH_DISABLED_WARNING);
    servePlatform = createPlatformHandler(platformParts);
  } else {
    signIn = await buildSignIn({
      config,
      settings: signInSettings,
      app,
      log,
      storage,
      shared,
      metrics,
      audit,
      usage,
      inFlight,
      client,
      answerFailure,
    });
    checks.push(...signIn.checks);
    warnings.push(...signIn.warnings);
    servePlatform = createPlatformHandler({
      ...platformParts,
      gate: { decide: signIn.decide, website: signInSettings.website, controls: signIn.controls },
    });
  }
  registerHealthRoutes(app, checks, warnings);

  return {
    app,
    metrics: prometheus,
    providerAttempted: signIn?.providerAttempted ?? Promise.resolve(),
    async close() {
      signIn?.stop();
      await app.close();
      await signIn?.flush();
      await forwarder.close();
      await usage.close();
      await shared.close();
      await storage.close();
    },
  };
}

interface SignInParts {
  config: Config;
  settings: SignInSettings;
  app: FastifyInstance;
  log: Logger;
  storage: Storage;
  shared: SharedState;
  metrics: MetricsSink;
  audit: AuditLog;
  usage: UsageRecorder;
  inFlight: InFlightRequests;
  client: ClientAddressing;
  answerFailure: ReturnType<typeof createFailureAnswer>;
}

interface SignIn {
  decide: Decide;
  controls: PlatformControls;
  checks: ReadinessCheck[];
  warnings: string[];
  providerAttempted: Promise<void>;
  /** Stops the timers and the provider's rediscovery. */
  stop(): void;
  /** Writes what is batched (keys' last use). */
  flush(): Promise<void>;
}

/**
 * Everything that exists only when people sign in: the provider, sessions, API keys, the one
 * decision, and the routes that ask it (sign-in, keys and account, admin, forward-auth).
 */
async function buildSignIn(parts: SignInParts): Promise<SignIn> {
  const { config, settings, app, log, storage, shared, metrics, audit, usage, inFlight, client } = parts;
  const { redis, revocations } = shared;
  const cookies = cookieNamesFor(settings.website.startsWith('https:'));
  const warnings: string[] = [];
  const providers = new SignInProviders(settings.providers, log, (ok) =>
    metrics.providerRefreshes.inc({ result: ok ? 'success' : 'failure' }),
  );
  const keyHashSecret = loadKeyHashSecret(config.auth.key_hash_secret, config.gateway.data_dir);
  const scimStore = config.scim.enabled
    ? new ScimStore(storage.db, {
        adminGroups: config.auth.admin_groups,
        adminEmails: config.auth.admin_emails,
        allowedGroups: config.auth.allowed_groups,
        allowUnverifiedEmail: config.auth.allow_unverified_email,
      })
    : undefined;
  const disableRefused = onProviderRefusal(storage.db, revocations, audit, log);
  const sessions = new SessionStore(
    storage.db,
    { idleMs: config.auth.session_idle_minutes * 60_000, maxMs: config.auth.session_max_hours * 3_600_000 },
    shared.cache,
    {
      refresher: createProvidersRefresher(providers, log, {
        recheckMs: config.auth.recheck_minutes * 60_000,
        onAccessChanged: async (user, access) => {
          // A user the provider provisions keeps the role and groups SCIM gave them.
          await updateUserAccess(storage.db, user.id, (await scimStore?.provisionedAccess(user.id)) ?? access);
          // Cached keys carry their owner's role: an `admin` key must lose it with its owner.
          await revocations.keysChanged();
        },
      }),
      sealingKey: deriveSealingKey(keyHashSecret),
      onEnded: (user, reason) => {
        audit.record(undefined, { event: 'sign_out', actor: user, detail: { reason } });
        if (reason === 'refresh_failed') disableRefused(user);
      },
    },
    revocations,
  );
  // Each table's owner purges it.
  const purge = () =>
    Promise.all([
      sessions.purgeExpired(),
      purgeExpiredLoginFlows(storage.db),
      purgeUsedLogoutTokens(storage.db),
      deviceStore.purgeExpired(),
    ]);
  const purgeTimer = setInterval(() => void purge().catch(() => undefined), PURGE_INTERVAL_MS).unref();
  const keyStore = new ApiKeyStore(storage.db, keyHashSecret, config.auth.api_key_prefix);
  const deviceStore = new DeviceStore(storage.db, keyHashSecret, deriveSealingKey(keyHashSecret));
  const testToken = await loadTestToken(config, storage.db);
  if (testToken) {
    warnings.push(TEST_TOKEN_WARNING);
    log.warn(TEST_TOKEN_WARNING);
  }
  const verifier = new ApiKeyVerifier(keyStore, config.auth.api_key_prefix, testToken, shared.cache, {
    verified: (result) => metrics.keyVerifications.inc({ result }),
    cacheLookup: (hit) => metrics.keyCache.inc({ result: hit ? 'hit' : 'miss' }),
  });
  shared.bus.subscribe((change) => {
    verifier.forgetAll();
    sessions.forgetAll();
    if (change.kind === 'user_disabled') inFlight.abortUser(change.userId);
  });
  const failedAuth = new FailedAuthLimiter(config.auth.failed_auth_per_minute, shared.failureCounter);
  // Bearers first: an Authorization header is always judged, never passed over for a cookie. A JWT
  // from a trusted issuer is the JWT loader's; any other Authorization header is the API-key loader's.
  const identifier = createIdentifier([
    jwtBearerLoader({
      issuers: config.auth.trusted_issuers,
      apiKeyPrefix: config.auth.api_key_prefix,
      limiter: failedAuth,
      onSignIn: (request, identity, claims) =>
        audit.record(request, {
          event: 'machine_sign_in',
          actor: { id: identity.user.id },
          target: identity.service?.name,
          detail: {
            issuer: identity.service?.issuer ?? null,
            subject: identity.service?.subject ?? null,
            expires_at: claims.exp ?? null,
          },
        }),
    }),
    apiKeyLoader(verifier, failedAuth),
    sessionLoader(sessions, cookies.session),
  ]);
  const limiter = new RateLimiter(shared.windowCounter);
  const budgets = createBudgets(config, storage, redis, metrics, log);
  const caps = {
    maxRequestsPerMinute: config.auth.max_key_requests_per_minute,
    maxTokensPerMinute: config.auth.max_key_tokens_per_minute,
  };
  const decide = createDecide({
    identifier,
    pathRules: compileAccessRules(config.gateway.public_paths, config.gateway.admin_paths),
    scopeRules: {
      inference: compilePathRules(config.auth.scope_paths.inference, { caseInsensitive: false }),
      training: compilePathRules(config.auth.scope_paths.training, { caseInsensitive: false }),
    },
    websiteOrigin: new URL(settings.website).origin,
    limiter,
    defaults: {
      keyRequestsPerMinute: config.auth.key_requests_per_minute,
      keyTokensPerMinute: config.auth.key_tokens_per_minute,
      userRequestsPerMinute: config.auth.user_requests_per_minute,
      userTokensPerMinute: config.auth.user_tokens_per_minute,
    },
    caps,
    skipUnseenBodyControls: config.gateway.forward_auth_skip_body_controls,
    budgets,
  });

  registerAuthRoutes(app, {
    db: storage.db,
    providers,
    sessions,
    identifier,
    audit,
    cookies,
    secureCookies: settings.website.startsWith('https:'),
    website: settings.website,
    recheckMs: config.auth.recheck_minutes * 60_000,
  });
  registerKeyRoutes(app, {
    store: keyStore,
    revocations,
    decide,
    audit,
    usage,
    maxDays: config.auth.api_key_max_days,
    caps,
    maxKeysPerUser: config.auth.max_keys_per_user,
    website: settings.website,
    budgets,
  });
  registerAdminRoutes(app, {
    db: storage.db,
    keys: keyStore,
    revocations,
    decide,
    audit,
    usage,
    budgets,
    ...(providers.all.length > 1 ? { providerOf: (user) => providers.nameFor(user) } : {}),
  });
  if (scimStore) {
    setSignInHook(storage.db, linkAtSignIn(storage.db, scimStore, revocations, audit));
    registerScimRoutes(app, {
      store: scimStore,
      decide,
      revocations,
      audit,
      token: config.scim.token,
      website: settings.website,
      answerFailure: parts.answerFailure,
    });
  }
  registerSignedOutPage(app, settings.website.startsWith('https:'));
  registerForwardAuth(app, { decide, isTrustedPeer: client.isTrustedPeer });
  registerMeRoute(app, decide);
  const { device } = config.auth;
  registerDeviceRoutes(app, {
    flow: new DeviceFlow({
      store: deviceStore,
      keys: keyStore,
      audit,
      failedAuth,
      codeRequests: shared.deviceCodeRequests,
      settings: {
        codeSeconds: device.code_seconds,
        pollIntervalSeconds: device.poll_interval_seconds,
        keyDays: device.key_days,
        maxKeyDays: config.auth.api_key_max_days,
        codesPerMinute: device.codes_per_minute,
        maxKeysPerUser: config.auth.max_keys_per_user,
        caps,
      },
    }),
    decide,
    website: settings.website,
  });

  return {
    decide,
    controls: createPlatformControls({
      limiter,
      usage,
      bodyLimit: { bytes: config.gateway.max_checked_body_mb * 1024 * 1024, setting: 'gateway.max_checked_body_mb' },
      budgets,
    }),
    checks: providers.readinessChecks(),
    warnings,
    providerAttempted: providers.whenAttempted(),
    stop() {
      clearInterval(purgeTimer);
      providers.close();
    },
    flush: async () => {
      await verifier.flush();
      await budgets?.close();
    },
  };
}

/** Fastify serves only the gateway's own paths: its pages and API, and the health checks. */
function routeClassOf(url: string): string {
  return url.startsWith('/v1/auth/') ? 'auth' : 'health';
}

/** Lamini's static test token: accepted as a key of a user of its own, with a warning every start. */
async function loadTestToken(config: Config, db: Db): Promise<StaticKey | undefined> {
  const { test_token: token, test_token_email: email } = config.auth;
  if (!token || !email) return undefined;
  const user = await recordSignIn(db, { issuer: 'gatehouse:test-token', subject: email, email });
  return { token, user };
}
