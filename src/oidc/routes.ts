import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as client from 'openid-client';
import { AuthError, ProviderError } from '../errors.js';
import {
  LOGIN_PATH,
  SIGNED_OUT_COOKIE,
  SIGNED_OUT_PATH,
  SIGNED_OUT_SECONDS,
  sendChallenge,
} from '../http/challenge.js';
import type { Identifier } from '../identity/identify.js';
import { assertSameOrigin } from '../policy/same-origin.js';
import { cookieOptions, type CookieNames } from '../sessions/cookies.js';
import type { SessionStore } from '../sessions/store.js';
import type { Db } from '../storage/database.js';
import { recordSignIn } from '../users/store.js';
import { recheckBy } from './refresh.js';
import type { AuditLog } from '../audit/log.js';
import { decideSignIn, type SignInRules } from '../policy/sign-in.js';
import { sendErrorPage } from '../web/pages.js';
import { backchannelLogoutRoutes, createLogoutTokenVerifier } from './backchannel-logout.js';
import { finishLogin, startLogin } from './login.js';
import type { ProviderConnection } from './provider.js';
import { safeReturnTo } from './return-to.js';

export const CALLBACK_PATH = '/v1/auth/auth';
export const LOGOUT_PATH = '/v1/auth/logout';
export const ME_PATH = '/v1/auth/me';

export interface AuthRoutesOptions {
  db: Db;
  audit: AuditLog;
  signInRules: SignInRules;
  provider: ProviderConnection;
  sessions: SessionStore;
  identifier: Identifier;
  cookies: CookieNames;
  secureCookies: boolean;
  website: string;
  scopes: string[];
  /** `auth.recheck_minutes` in ms: the sign-in rules are applied again at a refresh at least this often. */
  recheckMs: number;
}

/**
 * Sign-in, its callback, sign-out (the browser's and the provider's back-channel one) and "who am
 * I": the only routes that speak OpenID Connect.
 */
export function registerAuthRoutes(app: FastifyInstance, options: AuthRoutesOptions): void {
  const { db, provider, sessions, cookies, secureCookies, website, audit } = options;
  const redirectUri = website + CALLBACK_PATH;
  const websiteOrigin = new URL(website).origin;

  app.get<{ Querystring: { return_to?: string } }>(LOGIN_PATH, async (request, reply) => {
    const returnTo = safeReturnTo(request.query.return_to ?? '/');
    const retry = `${LOGIN_PATH}?return_to=${encodeURIComponent(returnTo)}`;
    try {
      const { authorizationUrl, flowToken } = await startLogin(db, provider, redirectUri, options.scopes, returnTo);
      reply.setCookie(cookies.loginFlow, flowToken, cookieOptions(secureCookies, 600));
      return reply.header('cache-control', 'no-store').redirect(authorizationUrl.href, 302);
    } catch (error) {
      request.log.error({ err: error }, 'sign-in could not start');
      return sendErrorPage(
        reply,
        503,
        'Sign-in is unavailable',
        'The sign-in provider cannot be reached right now. Please try again in a minute; if this persists, tell the administrator.',
        retry,
      );
    }
  });

  app.get(CALLBACK_PATH, async (request, reply) => {
    const callbackUrl = new URL(redirectUri);
    callbackUrl.search = new URL(request.url, 'http://callback.invalid').search;
    const flowToken = request.cookies[cookies.loginFlow];
    reply.clearCookie(cookies.loginFlow, cookieOptions(secureCookies));
    const providerError = callbackUrl.searchParams.get('error');
    if (providerError) {
      request.log.warn(
        { error: providerError, description: callbackUrl.searchParams.get('error_description') },
        'sign-in refused by the provider',
      );
      audit.record(request, { event: 'sign_in_failed', detail: { reason: `provider_${providerError.slice(0, 64)}` } });
      if (flowToken) await finishLogin(db, provider, flowToken, callbackUrl).catch(() => undefined);
      return sendErrorPage(
        reply,
        403,
        'Sign-in was not completed',
        providerError === 'access_denied'
          ? 'The sign-in provider reported that access was denied.'
          : `The sign-in provider reported an error (${providerError.slice(0, 64)}).`,
        LOGIN_PATH,
      );
    }
    let signedIn;
    try {
      signedIn = await finishLogin(db, provider, flowToken, callbackUrl);
    } catch (error) {
      const { status, title, message } = describeSignInFailure(error);
      request.log.warn({ err: error }, 'sign-in failed');
      audit.record(request, {
        event: 'sign_in_failed',
        detail: { reason: (error as { code?: string }).code ?? 'token_rejected' },
      });
      return sendErrorPage(reply, status, title, message, LOGIN_PATH);
    }
    const actor = { email: signedIn.email ?? signedIn.subject };
    const decision = decideSignIn(signedIn.claims, options.signInRules);
    if (!decision.allowed) {
      audit.record(request, { event: 'sign_in_failed', actor, detail: { reason: decision.reason } });
      return sendErrorPage(reply, 403, 'Access not allowed', decision.message, LOGIN_PATH);
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
        LOGIN_PATH,
      );
    }
    const previous = request.cookies[cookies.session];
    // A new id at every sign-in defeats session fixation (OWASP Session Management).
    if (previous) await sessions.end(previous);
    const token = await sessions.create(user.id, recheckBy(signedIn.tokens, options.recheckMs));
    reply.setCookie(cookies.session, token, cookieOptions(secureCookies));
    audit.record(request, { event: 'sign_in', actor: user, detail: { role: user.role } });
    return reply.header('cache-control', 'no-store').redirect(signedIn.returnTo, 302);
  });

  const logout = async (request: FastifyRequest, reply: FastifyReply) => {
    const token = request.cookies[cookies.session];
    let idToken: string | null | undefined;
    if (token) {
      assertSameOrigin(request.method, request.headers, websiteOrigin);
      const identity = await options.identifier.identify(request).catch(() => undefined);
      idToken = await sessions.end(token);
      if (identity) audit.record(request, { event: 'sign_out', actor: identity.user });
    }
    reply.clearCookie(cookies.session, cookieOptions(secureCookies));
    reply.setCookie(SIGNED_OUT_COOKIE, '1', cookieOptions(secureCookies, SIGNED_OUT_SECONDS));
    reply.header('cache-control', 'no-store');
    if (!provider.endSessionEndpoint) return reply.redirect(SIGNED_OUT_PATH, 302);
    // RP-Initiated Logout 1.0 section 2: the hint lets the provider end its own session without asking.
    const parameters: Record<string, string> = { post_logout_redirect_uri: website };
    if (idToken) parameters.id_token_hint = idToken;
    return reply.redirect(client.buildEndSessionUrl(provider.configuration(), parameters).href, 302);
  };
  app.get(LOGOUT_PATH, logout);
  app.post(LOGOUT_PATH, logout);

  app.get(ME_PATH, async (request, reply) => {
    const identity = await options.identifier.identify(request);
    if (!identity) return sendChallenge(request, reply);
    const { subject, email, name } = identity.user;
    return reply.header('cache-control', 'no-store').send({ sub: subject, email, name });
  });

  // Its own context: it parses only form bodies and answers failures in the spec's shape.
  void app.register(backchannelLogoutRoutes, { verifier: createLogoutTokenVerifier(provider, db), sessions, audit });
}

/** fetch() reports an unreachable or timed-out provider as a TypeError or AbortError, cause attached. */
function isNetworkFailure(error: unknown): boolean {
  for (let current = error; current instanceof Error; current = current.cause) {
    if (current.name === 'AbortError' || current.name === 'TimeoutError') return true;
    if (current instanceof TypeError && current.message === 'fetch failed') return true;
  }
  return false;
}

function describeSignInFailure(error: unknown): { status: number; title: string; message: string } {
  if (error instanceof AuthError) {
    return { status: 400, title: 'Sign-in expired', message: `Sign-in could not be completed: ${error.message}.` };
  }
  if (error instanceof ProviderError) {
    return {
      status: 503,
      title: 'Sign-in is unavailable',
      message: 'The sign-in provider cannot be reached right now.',
    };
  }
  if (error instanceof client.ResponseBodyError && error.error === 'invalid_grant') {
    // A code that is forged, used, or past its life: the person just needs to start again.
    return { status: 400, title: 'Sign-in expired', message: 'This sign-in link has expired or was already used.' };
  }
  if (isNetworkFailure(error)) {
    return {
      status: 503,
      title: 'Sign-in is unavailable',
      message: 'The sign-in provider cannot be reached right now. Please try again in a minute.',
    };
  }
  if (
    error instanceof client.ResponseBodyError ||
    error instanceof client.AuthorizationResponseError ||
    error instanceof client.WWWAuthenticateChallengeError
  ) {
    return {
      status: 502,
      title: 'Sign-in failed',
      message:
        'The sign-in provider refused to complete the sign-in. The administrator can find the details in the gateway log.',
    };
  }
  return {
    status: 400,
    title: 'Sign-in failed',
    message: 'The answer from the sign-in provider could not be verified, so you were not signed in.',
  };
}
