import type { IncomingHttpHeaders } from 'node:http';
import { ForbiddenError } from '../errors.js';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Refuses a state-changing request carried by the session cookie unless the browser says it comes
 * from the website's own origin (OWASP CSRF cheat sheet: verifying origin with standard headers).
 * SameSite=Lax alone still lets a sibling subdomain or a top-level POST through on some browsers.
 */
export function assertSameOrigin(method: string, headers: IncomingHttpHeaders, websiteOrigin: string): void {
  if (SAFE_METHODS.has(method.toUpperCase())) return;
  const origin = headers.origin;
  if (origin !== undefined) {
    if (origin === websiteOrigin) return;
  } else if (headers['sec-fetch-site'] === 'same-origin') {
    return;
  }
  throw new ForbiddenError(
    'CROSS_ORIGIN_REQUEST',
    `cross-origin ${method.toUpperCase()} refused: a request signed in by the session cookie must come from ${websiteOrigin}; programs should use an API key`,
  );
}
