import type { IncomingHttpHeaders } from 'node:http';
import { AuthError } from '../errors.js';
import type { KeyControls } from '../keys/controls.js';
import type { ApiKeyVerifier } from '../keys/verify.js';
import type { SessionStore } from '../sessions/store.js';
import type { User } from '../users/store.js';
import type { FailedAuthLimiter } from './failure-limiter.js';

export type AuthMethod = 'session' | 'api_key';

export interface Identity {
  user: User;
  method: AuthMethod;
  /** The API key the request came with, and what it may do. */
  key?: { id: string; controls: KeyControls; expires_at: number | null };
  /** ID token of the sign-in, for the provider's logout; only for sessions. */
  idToken?: string | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set once the caller is identified, for the audit of what happens to the request next. */
    identity?: Identity;
  }
}

/** What identifying a caller reads: a FastifyRequest is one, and so is a request for the platform. */
export interface CallerRequest {
  readonly headers: IncomingHttpHeaders;
  /** The client's address, after any trusted proxies. */
  readonly ip: string;
  readonly cookies: Record<string, string | undefined>;
  identity?: Identity;
}

export interface Identifier {
  /**
   * Who sent this request, or undefined when it carries no credential at all. A credential that is
   * present but wrong throws an AuthError saying why, so it is never mistaken for "not signed in".
   */
  identify(request: CallerRequest): Promise<Identity | undefined>;
}

export interface IdentifierOptions {
  sessions: SessionStore;
  sessionCookie: string;
  keys: ApiKeyVerifier;
  limiter: FailedAuthLimiter;
}

/** RFC 6750 2.1 `b64token`; keys are accepted from the Authorization header only, never a query string. */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** Identifies programs by `Authorization: Bearer <key>` and browsers by their session cookie. */
export function createIdentifier({ sessions, sessionCookie, keys, limiter }: IdentifierOptions): Identifier {
  return {
    async identify(request) {
      const authorization = request.headers.authorization;
      if (authorization !== undefined) {
        await limiter.assertAllowed(request.ip);
        const key = BEARER.exec(authorization)?.[1];
        try {
          if (!key) {
            throw new AuthError('invalid_authorization_header', 'Send the API key as "Authorization: Bearer <key>".');
          }
          const record = await keys.verify(key);
          const { id, controls, expires_at } = record;
          request.identity = { user: record.user, method: 'api_key', key: { id, controls, expires_at } };
          return request.identity;
        } catch (error) {
          if (error instanceof AuthError) await limiter.recordFailure(request.ip);
          throw error;
        }
      }
      const token = request.cookies[sessionCookie];
      if (!token) return undefined;
      const session = await sessions.find(token);
      if (!session) return undefined;
      request.identity = { user: session.user, method: 'session', idToken: session.idToken };
      return request.identity;
    },
  };
}
