import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { html, type SafeHtml } from './html.js';

export const STYLESHEET_PATH = '/v1/auth/assets/gatehouse.css';
// The build copies this file beside the compiled module.
const stylesheet = readFileSync(new URL('./gatehouse.css', import.meta.url), 'utf8');

/** No inline script or style anywhere: a strict policy makes injected markup inert. */
const CONTENT_SECURITY_POLICY =
  "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function layout(title: string, body: SafeHtml): SafeHtml {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Gatehouse</title>
<link rel="stylesheet" href="${STYLESHEET_PATH}">
</head>
<body>
<main class="card">
${body}
</main>
</body>
</html>`;
}

export function sendPage(reply: FastifyReply, status: number, title: string, body: SafeHtml): FastifyReply {
  return reply
    .code(status)
    .headers({
      'content-security-policy': CONTENT_SECURITY_POLICY,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    })
    .type('text/html; charset=utf-8')
    .send(layout(title, body).value);
}

/** A page for a person whose sign-in failed: what happened in plain words and a way to try again. */
export function sendErrorPage(
  reply: FastifyReply,
  status: number,
  title: string,
  message: string,
  retryHref: string,
): FastifyReply {
  return sendPage(
    reply,
    status,
    title,
    html`<h1>${title}</h1>
<p>${message}</p>
<p><a class="button" href="${retryHref}">Try signing in again</a></p>`,
  );
}

export function registerAssets(app: FastifyInstance): void {
  app.get(STYLESHEET_PATH, (_request, reply) =>
    reply.type('text/css; charset=utf-8').header('cache-control', 'public, max-age=3600').send(stylesheet),
  );
}
