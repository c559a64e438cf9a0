import type { FastifyInstance } from 'fastify';
import { ForbiddenError } from '../errors.js';
import { sendApiError } from '../http/errors.js';
import type { Identifier } from '../identity/identify.js';
import { classifyTarget, type PathRules } from '../policy/access.js';
import { assertSameOrigin } from '../policy/same-origin.js';

export const CHECK_PATH = '/v1/auth/check';

export interface ForwardAuthOptions {
  identifier: Identifier;
  rules: PathRules;
  website: string;
  isTrustedPeer: (address: string | undefined) => boolean;
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Forward-auth for nginx `auth_request`, Traefik `forwardAuth` and Envoy `ext_authz`: 200 with the
 * identity headers, or 401/403. A claimed public path is believed only from a trusted proxy, since
 * any client could otherwise claim to be asking about one.
 */
export function registerForwardAuth(app: FastifyInstance, options: ForwardAuthOptions): void {
  const websiteOrigin = new URL(options.website).origin;
  app.get(CHECK_PATH, async (request, reply) => {
    const trusted = options.isTrustedPeer(request.socket.remoteAddress);
    const originalUri = header(request.headers['x-forwarded-uri']) ?? header(request.headers['x-original-uri']);
    const originalMethod =
      header(request.headers['x-forwarded-method']) ?? header(request.headers['x-original-method']);
    const claimed = originalUri ? classifyTarget(originalUri, options.rules).access : 'signed_in';
    // From a peer that is not a trusted proxy the headers are believed only where they make the
    // answer stricter: an admin path or an unsafe method, never a public path.
    const access = trusted || claimed === 'admin' ? claimed : 'signed_in';
    reply.header('cache-control', 'no-store');
    if (access === 'public') return reply.code(200).send();
    const identity = await options.identifier.identify(request);
    if (!identity) {
      return sendApiError(reply, 401, 'missing_credentials', 'Sign in required.', { 'www-authenticate': 'Bearer' });
    }
    if (access === 'admin' && identity.user.role !== 'admin') {
      throw new ForbiddenError('admin_required', 'This path is for administrators only.');
    }
    if (identity.method === 'session' && originalMethod) {
      assertSameOrigin(originalMethod, request.headers, websiteOrigin);
    }
    const { subject, email } = identity.user;
    reply.header('x-forwarded-user', subject);
    if (email) reply.header('x-forwarded-email', email);
    if (identity.key) reply.header('x-forwarded-key-id', identity.key.id);
    if (identity.user.groups.length) reply.header('x-forwarded-groups', identity.user.groups.join(','));
    return reply.code(200).send();
  });
}
