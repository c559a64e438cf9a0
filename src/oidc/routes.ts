import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as client from 'openid-client';
import { LOGIN_PATH, SIGNED_OUT_COOKIE, SIGNED_OUT_PATH, SIGNED_OUT_SECONDS } from '../http/challenge.js';
import { unavailableDependency } from '../http/dependency-errors.js';
import type { Identifier } from '../identity/identify.js';
import { assertSameOrigin } from '../policy/same-origin.js';
import { cookieOptions, type CookieNames } from '../sessions/cookies.js';
import type { SessionStore } from '../sessions/store.js';
import type { Db } from '../storage/database.js';
import { recordSignIn } from '../users/store.js';
import type { User } from '../users/store.js';
import { recheckBy } from './refresh.js';
import type { AuditLog } from '../audit/log.js';
import { decideSignIn } from '../policy/sign-in.js';
import { sendErrorPage, sendPage } from '../web/pages.js';
import { chooserHref, renderSignInChooser, renderUnknownProvider } from '../web/sign-in-chooser.js';
import { backchannelLogoutRoutes, createLogoutTokenVerifier } from './backchannel-logout.js';
import { registerFrontchannelLogout } from './frontchannel-logout.js';
import { describeCallbackError, describeSignInError, SIGN_IN_FAILURES, type SignInFailure } from './failures.js';
import { finishLogin, LoginFlowCap, startLogin } from './login.js';
import type { ConnectedProvider, SignInProviders } from './providers.js';
import { safeReturnTo } from './return-to.js';

export { CALLBACK_PATH } from './providers.js';
export const LOGOUT_PATH = '/v1/auth/logout';

export interface AuthRoutesOptions {
  db: Db;
  audit: AuditLog;
  providers: SignInProviders;
  sessions: SessionStore;
  identifier: Identifier;
  cookies: CookieNames;
  secureCookies: boolean;
  website: string;
  /** `auth.recheck_minutes` in ms: the sign-in rules are applied again at a refresh at least this often. */
  recheckMs: number;
}

/**
 * Sign-in (with a chooser when there are several providers), each provider's callback, sign-out
 * (the browser's, and the provider's over the back and front channels) and "who am I": the only
 * routes that speak OpenID Connect.
 */
export function registerAuthRoutes(app: FastifyInstance, options: AuthRoutesOptions): void {
  const { db, providers, sessions, cookies, secureCookies, website, audit } = options;
  const websiteOrigin = new URL(website).origin;

  const flowCap = new LoginFlowCap();

  app.get<{ Querystring: { return_to?: string; provider?: string } }>(LOGIN_PATH, async (request, reply) => {
    const returnTo = safeReturnTo(request.query.return_to ?? '/');
    const chosen = request.query.provider;
    const [only] = providers.all;
    const provider = typeof chosen === 'string' ? providers.get(chosen) : providers.all.length === 1 ? only : undefined;
    if (chosen !== undefined && !provider) {
      request.log.info({ provider: String(chosen).slice(0, 64) }, 'sign-in refused: unknown provider');
      return sendPage(reply, 400, 'Unknown sign-in provider', renderUnknownProvider(LOGIN_PATH, returnTo));
    }
    if (!provider) {
      return sendPage(reply, 200, 'Sign in', renderSignInChooser(LOGIN_PATH, providers.all, returnTo));
    }
    const retry =
      providers.all.length > 1
        ? chooserHref(LOGIN_PATH, provider.id, returnTo)
        : `${LOGIN_PATH}?return_to=${encodeURIComponent(returnTo)}`;
    try {
      const { authorizationUrl, flowToken } = await startLogin(db, provider, website + provider.callbackPath, returnTo);
      await flowCap.admit(db, request.ip, flowToken);
      reply.setCookie(cookies.loginFlow, flowToken, cookieOptions(secureCookies, 600));
      return reply.header('cache-control', 'no-store').redirect(authorizationUrl.href, 302);
    } catch (error) {
      const failure = unavailableDependency(error) ? 'database_unavailable' : 'provider_unavailable';
      request.log.error({ err: error, reason: failure, provider: provider.id }, 'sign-in could not start');
      const { status, title, message } = SIGN_IN_FAILURES[failure];
      return sendErrorPage(reply, status, title, message, retry);
    }
  });

  for (const provider of providers.all) registerCallback(app, provider, options);

  const logout = async (request: FastifyRequest, reply: FastifyReply) => {
    const token = request.cookies[cookies.session];
    let idToken: string | null | undefined;
    let user: User | undefined;
    if (token) {
      assertSameOrigin(request.method, request.headers, websiteOrigin);
      const identity = await options.identifier.identify(request).catch(() => undefined);
      idToken = await sessions.end(token);
      user = identity?.user;
      if (identity) audit.record(request, { event: 'sign_out', actor: identity.user });
    }
    reply.clearCookie(cookies.session, cookieOptions(secureCookies));
    reply.setCookie(SIGNED_OUT_COOKIE, '1', cookieOptions(secureCookies, SIGNED_OUT_SECONDS));
    reply.header('cache-control', 'no-store');
    // The provider the person signed in with ends its own session too; with several and no
    // session to tell which, none is asked.
    const provider = user ? providers.byIssuer(user.issuer) : providers.all.length === 1 ? providers.all[0] : undefined;
    if (!provider || (!provider.connection.endSessionEndpoint && !provider.endSessionUrl)) {
      return reply.redirect(SIGNED_OUT_PATH, 302);
    }
    // RP-Initiated Logout 1.0 section 2: the hint lets the provider end its own session without
    // asking. `state` is optional there, but some providers (glewlwyd) return to the website only
    // with it. The return lands on the website, not on Gatehouse, so nothing is there to check it.
    const parameters: Record<string, string> = { post_logout_redirect_uri: website, state: client.randomState() };
    if (idToken) parameters.id_token_hint = idToken;
    if (provider.endSessionUrl) {
      return reply.redirect(
        fillEndSessionUrl(provider.endSessionUrl, { ...parameters, client_id: provider.clientId }),
        302,
      );
    }
    return reply.redirect(client.buildEndSessionUrl(provider.connection.configuration(), parameters).href, 302);
  };
  app.get(LOGOUT_PATH, logout);
  app.post(LOGOUT_PATH, logout);

  registerFrontchannelLogout(app, { providers, sessions, audit });
  // Its own context: it parses only form bodies and answers failures in the spec's shape.
  void app.register(backchannelLogoutRoutes, { verifier: createLogoutTokenVerifier(providers, db), sessions, audit });
}

/** `provider`'s callback: finishes only sign-ins started with it. */
function registerCallback(app: FastifyInstance, provider: ConnectedProvider, options: AuthRoutesOptions): void {
  const { db, sessions, cookies, secureCookies, website, audit } = options;
  const redirectUri = website + provider.callbackPath;
  const retry = options.providers.all.length > 1 ? chooserHref(LOGIN_PATH, provider.id, '/') : LOGIN_PATH;
  app.get(provider.callbackPath, async (request, reply) => {
    const callbackUrl = new URL(redirectUri);
    callbackUrl.search = new URL(request.url, 'http://callback.invalid').search;
    const flowToken = request.cookies[cookies.loginFlow];
    reply.clearCookie(cookies.loginFlow, cookieOptions(secureCookies));
    const refuse = (failure: SignInFailure, reportedByProvider = false) => {
      // Reasons the provider reported keep the provider_ prefix they always had in metrics.
      const reason = reportedByProvider ? `provider_${failure.reason}` : failure.reason;
      audit.record(request, { event: 'sign_in_failed', detail: { reason, provider: provider.id } });
      const { status, title, message } = SIGN_IN_FAILURES[failure.reason];
      return sendErrorPage(reply, status, title, message, retry, failure.providerCode);
    };
    const providerError = callbackUrl.searchParams.get('error');
    if (providerError) {
      const failure = describeCallbackError(providerError);
      request.log.warn(
        {
          reason: failure.reason,
          error: failure.providerCode,
          description: callbackUrl.searchParams.get('error_description')?.slice(0, 256),
        },
        'sign-in refused by the provider',
      );
      // The flow is spent either way; its row goes now rather than at the next purge.
      if (flowToken) await finishLogin(db, provider, flowToken, callbackUrl).catch(() => undefined);
      return refuse(failure, true);
    }
    let signedIn;
    try {
      signedIn = await finishLogin(db, provider, flowToken, callbackUrl);
    } catch (error) {
      const failure = describeSignInError(error);
      const level =
        failure.reason === 'database_unavailable' || failure.reason === 'client_rejected' ? 'error' : 'warn';
      request.log[level]({ err: error, reason: failure.reason }, 'sign-in failed');
      return refuse(failure);
    }
    if (signedIn.userinfoFailure) {
      request.log.warn(
        { err: signedIn.userinfoFailure },
        'UserInfo failed; signing in with the ID token’s claims alone',
      );
    }
    const actor = { email: signedIn.email ?? signedIn.name ?? signedIn.subject };
    if (provider.requireEmail && !signedIn.email) {
      audit.record(request, { event: 'sign_in_failed', actor, detail: { reason: 'email_missing' } });
      return sendErrorPage(
        reply,
        403,
        'Email address needed',
        'The sign-in provider did not share an email address for your account, and this service needs one. Ask the administrator to have the provider share it (the email scope or claim), then sign in again.',
        retry,
      );
    }
    const decision = decideSignIn(signedIn.claims, provider.signInRules);
    if (!decision.allowed) {
      audit.record(request, { event: 'sign_in_failed', actor, detail: { reason: decision.reason } });
      return sendErrorPage(reply, 403, 'Access not allowed', decision.message, retry);
    }
    const user = await recordSignIn(db, { ...signedIn, role: decision.role, groups: decision.groups });
    // Role and groups may have changed; this user's other sessions must not keep the old ones.
    sessions.forgetAll();
    if (user.disabled) {
      audit.record(request, { event: 'sign_in_failed', actor: user, detail: { reason: 'user_disabled' } });
      return sendErrorPage(
        reply,
        403,
        'Account disabled',
        'Your account has been disabled by an administrator.',
        retry,
      );
    }
    const previous = request.cookies[cookies.session];
    // A new id at every sign-in defeats session fixation (OWASP Session Management).
    if (previous) await sessions.end(previous);
    const token = await sessions.create(user.id, recheckBy(signedIn.tokens, options.recheckMs));
    reply.setCookie(cookies.session, token, cookieOptions(secureCookies));
    audit.record(request, { event: 'sign_in', actor: user, detail: { role: user.role, provider: provider.id } });
    return reply.header('cache-control', 'no-store').redirect(signedIn.returnTo, 302);
  });
}

/**
 * The operator's sign-out URL with its `{name}` placeholders replaced, each value URL-encoded:
 * Amazon Cognito publishes no end_session_endpoint, and signs out at
 * `https://DOMAIN/logout?client_id=…&logout_uri=…` on its hosted-UI domain. A placeholder without
 * a value (no ID token kept) becomes empty.
 */
export function fillEndSessionUrl(template: string, values: Record<string, string>): string {
  return template.replace(/\{(client_id|post_logout_redirect_uri|state|id_token_hint)\}/g, (_match, name: string) =>
    encodeURIComponent(values[name] ?? ''),
  );
}
