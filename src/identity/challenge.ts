import type { FastifyReply, FastifyRequest } from 'fastify';
import { AuthError } from '../errors.js';
import { sendApiError } from '../http/errors.js';

export const LOGIN_PATH = '/v1/auth/login';

/**
 * Answers a request that is not signed in: a person's browser is sent to sign in and brought back,
 * a program gets an OpenAI-shaped 401 it can show (never an HTML redirect it cannot follow).
 */
export function sendChallenge(request: FastifyRequest, reply: FastifyReply, error?: AuthError): FastifyReply {
  const method = request.method;
  const wantsHtml = String(request.headers.accept ?? '').includes('text/html');
  if (!error && (method === 'GET' || method === 'HEAD') && wantsHtml) {
    return reply.redirect(`${LOGIN_PATH}?return_to=${encodeURIComponent(request.url)}`, 302);
  }
  const problem =
    error ??
    new AuthError(
      'MISSING_CREDENTIALS',
      'Sign in required: send an API key as "Authorization: Bearer <key>" (create one on /v1/auth/account), or sign in at /v1/auth/login.',
    );
  return sendApiError(reply, problem.status, problem.code, problem.message, problem.headers);
}
