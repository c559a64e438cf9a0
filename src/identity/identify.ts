import type { FastifyRequest } from 'fastify';
import type { SessionStore } from '../sessions/store.js';
import type { User } from '../users/store.js';

export type AuthMethod = 'session' | 'api_key';

export interface Identity {
  user: User;
  method: AuthMethod;
  keyId?: string;
  /** ID token of the sign-in, for the provider's logout; only for sessions. */
  idToken?: string | null;
}

export interface Identifier {
  /**
   * Who sent this request, or undefined when it carries no credential at all. A credential that is
   * present but wrong throws an AuthError saying why, so it is never mistaken for "not signed in".
   */
  identify(request: FastifyRequest): Promise<Identity | undefined>;
}

/** Identifies browsers by their session cookie. */
export function sessionIdentifier(sessions: SessionStore, cookieName: string): Identifier {
  return {
    async identify(request) {
      const token = request.cookies[cookieName];
      if (!token) return undefined;
      const session = await sessions.find(token);
      if (!session) return undefined;
      return { user: session.user, method: 'session', idToken: session.idToken };
    },
  };
}
