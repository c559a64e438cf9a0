import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AuthError } from '../errors.js';
import { sendApiError } from './errors.js';

export const LOGIN_PATH = '/v1/auth/login';

/** Where a browser goes to sign in, or the 401 a program gets. */
export type Challenge = { signInAt: string } | AuthError;

/**
 * How to answer a request that is not signed in: a person's browser is sent to sign in and brought
 * back, a program gets an OpenAI-shaped 401 it can show (never an HTML redirect it cannot follow).
 */
export function challengeFor(
  request: { method: string; url: string; headers: IncomingHttpHeaders },
  error?: AuthError,
): Challenge {
  const method = request.method;
  const wantsHtml = String(request.headers.accept ?? '').includes('text/html');
  if (!error && (method === 'GET' || method === 'HEAD') && wantsHtml) {
    return { signInAt: `${LOGIN_PATH}?return_to=${encodeURIComponent(request.url)}` };
  }
  return (
    error ??
    new AuthError(
      'MISSING_CREDENTIALS',
      'Sign in required: send an API key as "Authorization: Bearer <key>" (create one on /v1/auth/account), or sign in at /v1/auth/login.',
    )
  );
}

export function sendChallenge(request: FastifyRequest, reply: FastifyReply, error?: AuthError): FastifyReply {
  const challenge = challengeFor(request, error);
  if (!(challenge instanceof AuthError)) return reply.redirect(challenge.signInAt, 302);
  return sendApiError(reply, challenge.status, challenge.code, challenge.message, challenge.headers);
}
