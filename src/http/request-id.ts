import type { IncomingHttpHeaders } from 'node:http';
import { randomUUID } from 'node:crypto';

/** Visible ASCII, as trace headers use; no spaces or control characters that could forge a log line. */
const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/**
 * A caller's X-Request-Id is kept when it is a sane token; anything else gets a fresh UUID, so a
 * 16 KB header cannot be copied into every log line.
 */
export function requestIdFor(headers: IncomingHttpHeaders): string {
  const incoming = headers['x-request-id'];
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
}
