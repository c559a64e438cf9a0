import type { FastifyInstance } from 'fastify';
import { sendApiError } from '../http/errors.js';
import type { Decide } from '../policy/decide.js';

export const CHECK_PATH = '/v1/auth/check';

export interface ForwardAuthOptions {
  decide: Decide;
  isTrustedPeer: (address: string | undefined) => boolean;
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Forward-auth for nginx `auth_request`, Traefik `forwardAuth` and Envoy `ext_authz`: 200 with the
 * identity headers, or 401/403/429. It asks the same decision as the gateway's own proxy, about the
 * request the proxy names (X-Forwarded-Method, X-Forwarded-Uri): path rules, scopes, request limits
 * (each check counts one request) and the failed-auth limit. What it cannot see, the body, it does
 * not pass silently: a key with a model allow-list or a token limit is refused unless the operator
 * chose otherwise. A claimed public path is believed only from a trusted proxy, since any client
 * could otherwise claim to be asking about one.
 */
export function registerForwardAuth(app: FastifyInstance, options: ForwardAuthOptions): void {
  app.get(CHECK_PATH, async (request, reply) => {
    const target = header(request.headers['x-forwarded-uri']) ?? header(request.headers['x-original-uri']);
    const method = header(request.headers['x-forwarded-method']) ?? header(request.headers['x-original-method']);
    reply.header('cache-control', 'no-store');
    const decision = await options.decide({
      credentials: request,
      method: method?.toUpperCase(),
      target,
      need: 'platform',
      targetTrusted: options.isTrustedPeer(request.socket.remoteAddress),
      bodyUnseen: true,
    });
    if (decision.outcome === 'challenge') {
      return sendApiError(reply, 401, 'missing_credentials', 'Sign in required.', { 'www-authenticate': 'Bearer' });
    }
    if (decision.outcome === 'deny') throw decision.error;
    if (decision.headers) reply.headers(decision.headers);
    const { forwarded } = decision;
    if (forwarded) {
      reply.header('x-forwarded-user', forwarded.user);
      if (forwarded.email) reply.header('x-forwarded-email', forwarded.email);
      if (forwarded.keyId) reply.header('x-forwarded-key-id', forwarded.keyId);
      if (forwarded.client) reply.header('x-forwarded-client', forwarded.client);
      if (forwarded.groups.length) reply.header('x-forwarded-groups', forwarded.groups.join(','));
    }
    return reply.code(200).send();
  });
}
