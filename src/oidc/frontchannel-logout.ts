import type { FastifyInstance } from 'fastify';
import type { AuditLog } from '../audit/log.js';
import type { SessionStore } from '../sessions/store.js';
import type { SignInProviders } from './providers.js';

/** The RP's Front-Channel Logout URI, registered at the provider by the operator. */
export const FRONTCHANNEL_LOGOUT_PATH = '/v1/auth/frontchannel-logout';

/** Longer than any provider's session id; a longer one is refused unread. */
const MAX_PARAMETER_LENGTH = 512;

export interface FrontchannelLogoutOptions {
  providers: SignInProviders;
  sessions: SessionStore;
  audit: AuditLog;
}

/**
 * `GET /v1/auth/frontchannel-logout?iss=…&sid=…`, OpenID Connect Front-Channel Logout 1.0: when a
 * person signs out at the provider, its page loads this URL in a hidden iframe. The iframe is a
 * third-party context where the SameSite=Lax session cookie is not sent, so the session is found
 * by `sid` alone: the operator registers the URI with `frontchannel_logout_session_required: true`,
 * and section 3 has the RP check that `iss` is its provider's before acting on `sid`: `iss` also
 * says which provider, when there are several (Entra ID's multi-tenant issuer matches with any
 * tenant id in place of `{tenantid}`, see issuerMatches). The answer is an empty page that
 * provider's origin may frame, and no cache may keep.
 * https://openid.net/specs/openid-connect-frontchannel-1_0.html
 */
export function registerFrontchannelLogout(app: FastifyInstance, options: FrontchannelLogoutOptions): void {
  const { providers, sessions, audit } = options;
  app.get<{ Querystring: { iss?: unknown; sid?: unknown } }>(FRONTCHANNEL_LOGOUT_PATH, async (request, reply) => {
    const { iss, sid } = request.query;
    const issuer = typeof iss === 'string' && providers.byIssuer(iss) ? iss : undefined;
    reply.headers({
      'cache-control': 'no-cache, no-store',
      'x-content-type-options': 'nosniff',
      'content-security-policy': `default-src 'none'; frame-ancestors ${issuer ? frameOrigin(issuer) : "'none'"}`,
    });
    if (!isParameter(iss) || !isParameter(sid)) {
      return reply
        .code(400)
        .type('text/plain; charset=utf-8')
        .send('Send iss and sid, once each: register this URI with frontchannel_logout_session_required.');
    }
    if (issuer === undefined) {
      request.log.warn({ iss: iss.slice(0, 200) }, 'front-channel logout refused: iss is not a sign-in provider');
      return reply
        .code(400)
        .type('text/plain; charset=utf-8')
        .send('iss is not one of this gateway’s sign-in providers.');
    }
    const users = await sessions.endByProvider(issuer, { sid });
    for (const user of users)
      audit.record(request, { event: 'sign_out', actor: user, detail: { reason: 'frontchannel' } });
    return reply.code(200).type('text/html; charset=utf-8').send('<!doctype html><title>Signed out</title>');
  });
}

/** The issuer's origin; an issuer that is no URL (no provider publishes one) may frame nothing. */
function frameOrigin(issuer: string): string {
  try {
    return new URL(issuer).origin;
  } catch {
    return "'none'";
  }
}

function isParameter(value: unknown): value is string {
  return typeof value === 'string' && value !== '' && value.length <= MAX_PARAMETER_LENGTH;
}
