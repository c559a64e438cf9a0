import type { FastifyInstance } from 'fastify';
import { sendChallenge } from '../identity/challenge.js';
import type { Identifier } from '../identity/identify.js';
import { assertSameOrigin } from '../policy/same-origin.js';
import type { Forwarder } from './forward.js';

export interface ProxyRouteOptions {
  forwarder: Forwarder;
  /** Undefined when auth is disabled: everything is forwarded without sign-in. */
  identifier?: Identifier;
  /** Public origin of the website; undefined when auth is disabled. */
  website?: string;
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/**
 * Every path the gateway does not own belongs to the platform: identify the caller, authorize,
 * forward. The body is left unread (a pass-through parser) so it streams straight upstream.
 */
export async function proxyRoutes(app: FastifyInstance, options: ProxyRouteOptions): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));
  const website = options.website ? new URL(options.website) : undefined;

  app.route({
    method: [...METHODS],
    url: '/*',
    exposeHeadRoute: false,
    handler: async (request, reply) => {
      const identity = options.identifier ? await options.identifier.identify(request) : undefined;
      if (options.identifier && !identity) return sendChallenge(request, reply);
      if (identity?.method === 'session' && website) assertSameOrigin(request.method, request.headers, website.origin);
      return options.forwarder(request, reply, {
        clientAddress: request.ip,
        publicProto: website ? website.protocol.slice(0, -1) : request.protocol,
        publicHost: website ? website.host : (request.headers.host ?? ''),
        requestId: String(request.id),
        identity: identity && {
          user: identity.user.subject,
          email: identity.user.email ?? undefined,
          keyId: identity.keyId,
        },
      });
    },
  });
}
