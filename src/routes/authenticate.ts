import type { FastifyReply, FastifyRequest } from 'fastify';
import { assertSameOrigin } from '../policy/same-origin.js';
import { sendChallenge } from '../identity/challenge.js';
import type { Identifier, Identity } from '../identity/identify.js';

/**
 * The caller of one of the gateway's own routes, or undefined after the challenge has been sent.
 * Unsafe methods carried by the session cookie must come from the website's origin (CSRF).
 */
export async function authenticate(
  identifier: Identifier,
  websiteOrigin: string,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<Identity | undefined> {
  const identity = await identifier.identify(request);
  if (!identity) {
    sendChallenge(request, reply);
    return undefined;
  }
  if (identity.method === 'session') assertSameOrigin(request.method, request.headers, websiteOrigin);
  return identity;
}
