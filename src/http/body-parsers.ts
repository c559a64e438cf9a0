import formbody from '@fastify/formbody';
import type { FastifyInstance } from 'fastify';
import { readBody, type BodyLimit } from './body.js';
import { JsonScanner } from './json-scan.js';

/**
 * What the gateway's own routes accept. Anyone may post to some of them (leak reports, back-channel
 * logout), and none needs more: a leak report of 1,000 entries is ~200 KB.
 */
export const GATEWAY_BODY_LIMIT: BodyLimit = { bytes: 256 * 1024 };

const NO_MEMBERS = new Set<string>();

/**
 * The body parsers of the gateway's own routes, replacing Fastify's: each body is capped, and JSON
 * nested deeper than MAX_JSON_DEPTH is refused while it arrives, before `JSON.parse` sees it. The
 * platform's requests never come here (see proxy/exchange.ts).
 */
export async function registerBodyParsers(app: FastifyInstance): Promise<void> {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', (request, payload, done) => {
    const scanner = new JsonScanner(NO_MEMBERS);
    readBody(payload, GATEWAY_BODY_LIMIT, (chunk) => scanner.write(chunk)).then(
      (body) => parseJson(request, body as unknown as string, done),
      (error: Error) => done(error, undefined),
    );
  });
  app.addContentTypeParser(
    'text/plain',
    { parseAs: 'string', bodyLimit: GATEWAY_BODY_LIMIT.bytes },
    (_request, body, done) => done(null, body),
  );
  // Pages post plain HTML forms.
  await app.register(formbody, { bodyLimit: GATEWAY_BODY_LIMIT.bytes });
}
