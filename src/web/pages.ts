import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { html, type SafeHtml } from './html.js';

export const STYLESHEET_PATH = '/v1/auth/assets/gatehouse.css';
export const ACCOUNT_SCRIPT_PATH = '/v1/auth/assets/account.js';
// The build copies assets/ beside the compiled module.
const assetsDir = join(dirname(fileURLToPath(import.meta.url)), 'assets');
const stylesheet = readFileSync(join(assetsDir, 'gatehouse.css'), 'utf8');
const accountScript = readFileSync(join(assetsDir, 'account.js'), 'utf8');

/** No inline script or style anywhere: a strict policy makes injected markup inert. */
const CONTENT_SECURITY_POLICY =
  "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export interface PageOptions {
  /** For tables with many columns (the admin console); forms and prose read better narrow. */
  wide?: boolean;
}

export function layout(title: string, body: SafeHtml, options: PageOptions = {}): SafeHtml {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${title} · Gatehouse</title>
        <link rel="icon" href="data:," />
        <link rel="stylesheet" href="${STYLESHEET_PATH}" />
      </head>
      <body>
        <main class="card${options.wide ? ' wide' : ''}">${body}</main>
      </body>
    </html>`;
}

export function sendPage(
  reply: FastifyReply,
  status: number,
  title: string,
  body: SafeHtml,
  options: PageOptions = {},
): FastifyReply {
  return reply
    .code(status)
    .headers({
      'content-security-policy': CONTENT_SECURITY_POLICY,
      'x-content-type-options': 'nosniff',
      // Not no-referrer: Chromium then sends `Origin: null` on form posts, which the CSRF check must refuse.
      'referrer-policy': 'same-origin',
      'cache-control': 'no-store',
    })
    .type('text/html; charset=utf-8')
    .send(layout(title, body, options).value);
}

/**
 * A page for a person whose sign-in failed: what happened in plain words and a way to try again;
 * `details` (the provider's own code) is shown small, for whoever they ask for help.
 */
export function sendErrorPage(
  reply: FastifyReply,
  status: number,
  title: string,
  message: string,
  retryHref: string,
  details?: string,
): FastifyReply {
  return sendPage(
    reply,
    status,
    title,
    html`<h1>${title}</h1>
      <p>${message}</p>
      <p><a class="button" href="${retryHref}">Try signing in again</a></p>
      ${details ? html`<p class="muted small">Details: ${details}</p>` : ''}`,
  );
}

const REFUSAL_TITLES: Record<number, string> = { 401: 'Not signed in', 403: 'Not allowed', 404: 'Not found' };

/**
 * The page a person's browser gets where a program gets an API error: what happened in plain words
 * (the same message the program reads) and the way back to their account.
 */
export function sendRefusalPage(reply: FastifyReply, status: number, message: string): FastifyReply {
  const title = REFUSAL_TITLES[status] ?? (status >= 500 ? 'Something went wrong' : 'Request refused');
  return sendPage(
    reply,
    status,
    title,
    html`<h1>${title}</h1>
      <p class="notice error" role="alert">${message}</p>
      <p><a class="button" href="/v1/auth/account">Back to your account</a></p>`,
  );
}

export function registerAssets(app: FastifyInstance): void {
  const asset = (path: string, type: string, body: string) =>
    app.get(path, (_request, reply) =>
      reply
        .type(type)
        .headers({ 'cache-control': 'public, max-age=3600', 'x-content-type-options': 'nosniff' })
        .send(body),
    );
  asset(STYLESHEET_PATH, 'text/css; charset=utf-8', stylesheet);
  asset(ACCOUNT_SCRIPT_PATH, 'text/javascript; charset=utf-8', accountScript);
}
