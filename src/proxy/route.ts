import type { FastifyInstance } from 'fastify';
import { ForbiddenError } from '../errors.js';
import { sendChallenge } from '../identity/challenge.js';
import type { Identifier } from '../identity/identify.js';
import { classifyTarget, type PathRules } from '../policy/access.js';
import type { PlatformControls } from '../policy/platform-controls.js';
import { assertSameOrigin } from '../policy/same-origin.js';
import type { Forwarder, RequestContext } from './forward.js';

export interface ProxyRouteOptions {
  forwarder: Forwarder;
  /** Absent when auth is disabled: everything is forwarded without sign-in. */
  gate?: {
    identifier: Identifier;
    website: string;
    rules: PathRules;
    controls: PlatformControls;
  };
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/**
 * Every path the gateway does not own belongs to the platform: identify the caller, authorize,
 * forward. The body is left unread (a pass-through parser) so it streams straight upstream.
 */
export async function proxyRoutes(app: FastifyInstance, { forwarder, gate }: ProxyRouteOptions): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));
  const website = gate ? new URL(gate.website) : undefined;
  const publicProto = website?.protocol.slice(0, -1);

  app.route({
    method: [...METHODS],
    url: '/*',
    exposeHeadRoute: false,
    handler: async (request, reply) => {
      const context: RequestContext = {
        clientAddress: request.ip,
        publicProto: publicProto ?? request.protocol,
        publicHost: website ? website.host : (request.headers.host ?? ''),
        requestId: String(request.id),
      };
      if (!gate) return forwarder(request, reply, context);

      const { access, path } = classifyTarget(request.url, gate.rules);
      if (access === 'public') return forwarder(request, reply, context);
      const identity = await gate.identifier.identify(request);
      if (!identity) return sendChallenge(request, reply);
      if (access === 'admin' && identity.user.role !== 'admin') {
        throw new ForbiddenError('admin_required', 'This path is for administrators only.');
      }
      if (identity.method === 'session') assertSameOrigin(request.method, request.headers, website!.origin);
      context.plan = await gate.controls(request, reply, identity, path);
      context.userId = identity.user.id;
      context.identity = {
        user: identity.user.subject,
        email: identity.user.email ?? undefined,
        keyId: identity.key?.id,
        groups: identity.user.groups,
      };
      return forwarder(request, reply, context);
    },
  });
}
