import type { FastifyInstance } from 'fastify';
import type { AuditLog } from '../audit/log.js';
import type { SessionStore } from '../sessions/store.js';
import type { ProviderConnection } from './provider.js';

/** The RP's Front-Channel Logout URI, registered at the provider by the operator. */
export const FRONTCHANNEL_LOGOUT_PATH = '/v1/auth/frontchannel-logout';

/** Longer than any provider's session id; a longer one is refused unread. */
const MAX_PARAMETER_LENGTH = 512;

export interface FrontchannelLogoutOptions {
  provider: ProviderConnection;
  sessions: SessionStore;
  audit: AuditLog;
}

/**
 * `GET /v1/auth/frontchannel-logout?iss=…&sid=…`, OpenID Connect Front-Channel Logout 1.0: when a
 * person signs out at the provider, its page loads this URL in a hidden iframe. The iframe is a
 * third-party context where the SameSite=Lax session cookie is not sent, so the session is found
 * by `sid` alone: the operator registers the URI with `frontchannel_logout_session_required: true`,
 * and section 3 has the RP check that `iss` is its provider's before acting on `sid`. The answer
 * is an empty page the provider's origin may frame, and no cache may keep.
 * https://openid.net/specs/openid-connect-frontchannel-1_0.html
 */
export function registerFrontchannelLogout(app: FastifyInstance, options: FrontchannelLogoutOptions): void {
  const { provider, sessions, audit } = options;
  app.get<{ Querystring: { iss?: unknown; sid?: unknown } }>(FRONTCHANNEL_LOGOUT_PATH, async (request, reply) => {
    const { iss, sid } = request.query;
    const issuer = provider.ready ? provider.configuration().serverMetadata().issuer : undefined;
    reply.headers({
      'cache-control': 'no-cache, no-store',
      'x-content-type-options': 'nosniff',
      'content-security-policy': `default-src 'none'; frame-ancestors ${issuer ? new URL(issuer).origin : "'none'"}`,
    });
    if (!isParameter(iss) || !isParameter(sid)) {
      return reply
        .code(400)
        .type('text/plain; charset=utf-8')
        .send('Send iss and sid, once each: register this URI with frontchannel_logout_session_required.');
    }
    if (iss !== issuer) {
      request.log.warn({ iss: iss.slice(0, 200) }, 'front-channel logout refused: iss is not the sign-in provider');
      return reply.code(400).type('text/plain; charset=utf-8').send('iss is not this gateway’s sign-in provider.');
    }
    const users = await sessions.endByProvider(issuer, { sid });
    for (const user of users)
      audit.record(request, { event: 'sign_out', actor: user, detail: { reason: 'frontchannel' } });
    return reply.code(200).type('text/html; charset=utf-8').send('<!doctype html><title>Signed out</title>');
  });
}

function isParameter(value: unknown): value is string {
  return typeof value === 'string' && value !== '' && value.length <= MAX_PARAMETER_LENGTH;
}
