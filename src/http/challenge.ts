import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AuthError } from '../errors.js';
import { sendApiError } from './errors.js';

export const LOGIN_PATH = '/v1/auth/login';
export const SIGNED_OUT_PATH = '/v1/auth/signed-out';
/**
 * Set at sign-out for a few minutes: the next time the browser would be sent to sign in (straight
 * away, or when the provider returns it to the website), it is shown "You are signed out" instead,
 * once. It only picks which page is shown, so nobody gains anything by setting it.
 */
export const SIGNED_OUT_COOKIE = 'gatehouse_signed_out';
export const SIGNED_OUT_SECONDS = 300;

/** A person's browser (navigating or posting a form) rather than a program: it asks for HTML. */
export function wantsPage(request: { headers: IncomingHttpHeaders }): boolean {
  return String(request.headers.accept ?? '').includes('text/html');
}

/**
 * A browser navigating (GET or HEAD): only such a request can be sent to sign in and brought back;
 * a form post would be lost on the way.
 */
export function isPageRequest(request: { method: string; headers: IncomingHttpHeaders }): boolean {
  return (request.method === 'GET' || request.method === 'HEAD') && wantsPage(request);
}

function justSignedOut(headers: IncomingHttpHeaders): boolean {
  return String(headers.cookie ?? '')
    .split(';')
    .some((pair) => pair.trim().startsWith(`${SIGNED_OUT_COOKIE}=`));
}

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
  if (!error && isPageRequest(request)) {
    const page = justSignedOut(request.headers) ? SIGNED_OUT_PATH : LOGIN_PATH;
    return { signInAt: `${page}?return_to=${encodeURIComponent(request.url)}` };
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
