import type { FastifyInstance } from 'fastify';
import { LOGIN_PATH, SIGNED_OUT_COOKIE, SIGNED_OUT_PATH } from '../http/challenge.js';
import { cookieOptions } from '../sessions/cookies.js';
import { html } from './html.js';
import { sendPage } from './pages.js';

/**
 * "You are signed out": shown once after sign-out instead of the provider's sign-in form, which
 * would otherwise look as if signing out had failed. It ends the once by clearing the marker cookie.
 */
export function registerSignedOutPage(app: FastifyInstance, secureCookies: boolean): void {
  app.get<{ Querystring: { return_to?: string } }>(SIGNED_OUT_PATH, async (request, reply) => {
    // The login route checks return_to again; here it is only carried along, bounded.
    const returnTo = String(request.query.return_to ?? '/').slice(0, 2000);
    reply.clearCookie(SIGNED_OUT_COOKIE, cookieOptions(secureCookies));
    return sendPage(
      reply,
      200,
      'Signed out',
      html`<h1>You are signed out</h1>
        <p>Your session on this gateway has ended. API keys you created keep working until they expire or are revoked.</p>
        <p><a class="button" href="${LOGIN_PATH}?return_to=${encodeURIComponent(returnTo)}">Sign in again</a></p>`,
    );
  });
}
