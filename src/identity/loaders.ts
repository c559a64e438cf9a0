import { AuthError } from '../errors.js';
import type { ApiKeyVerifier } from '../keys/verify.js';
import type { SessionStore } from '../sessions/store.js';
import type { FailedAuthLimiter } from './failure-limiter.js';
import type { CallerRequest, CredentialLoader, Identity } from './identify.js';

/** RFC 6750 2.1 `b64token`; keys are accepted from the Authorization header only, never a query string. */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/**
 * `Authorization: Bearer <key>`. Any Authorization header is this loader's: a wrong one is an
 * error, never a fall-through to the session cookie. Failures count towards the address's limit.
 */
export function apiKeyLoader(keys: ApiKeyVerifier, limiter: FailedAuthLimiter): CredentialLoader {
  function verify(request: CallerRequest, authorization: string): Promise<Identity> {
    return limiter.guard(request.ip, async () => {
      const key = BEARER.exec(authorization)?.[1];
      if (!key) {
        throw new AuthError('invalid_authorization_header', 'Send the API key as "Authorization: Bearer <key>".');
      }
      const { id, controls, expires_at, user } = await keys.verify(key);
      return (request.identity = { user, method: 'api_key', key: { id, controls, expires_at } });
    });
  }
  return {
    load(request) {
      const authorization = request.headers.authorization;
      return authorization === undefined ? undefined : verify(request, authorization);
    },
  };
}

/** The browser's session cookie; an unknown or ended session is "not signed in", not an error. */
export function sessionLoader(sessions: SessionStore, cookieName: string): CredentialLoader {
  async function find(request: CallerRequest, token: string): Promise<Identity | undefined> {
    const session = await sessions.find(token);
    if (!session) return undefined;
    return (request.identity = { user: session.user, method: 'session', idToken: session.idToken });
  }
  return {
    load(request) {
      const token = request.cookies[cookieName];
      return token ? find(request, token) : undefined;
    },
  };
}
