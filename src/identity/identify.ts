import type { IncomingHttpHeaders } from 'node:http';
import type { KeyControls } from '../keys/controls.js';
import type { User } from '../users/store.js';

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

/**
 * Reads one kind of credential (a session cookie, an API key; later a JWT bearer). Returns undefined
 * when the request does not carry this kind at all, so the next loader is asked; a credential that
 * is present but wrong throws an AuthError saying why, and no later loader is asked.
 */
export interface CredentialLoader {
  load(request: CallerRequest): Promise<Identity | undefined>;
}

export interface Identifier {
  /**
   * Who sent this request, or undefined when it carries no credential at all. A credential that is
   * present but wrong throws an AuthError saying why, so it is never mistaken for "not signed in".
   */
  identify(request: CallerRequest): Promise<Identity | undefined>;
}

/** Asks each loader in turn, as oauth2-proxy's session loaders: the first that recognises a credential decides. */
export function createIdentifier(loaders: readonly CredentialLoader[]): Identifier {
  return {
    async identify(request) {
      for (const loader of loaders) {
        const identity = await loader.load(request);
        if (identity) {
          request.identity = identity;
          return identity;
        }
      }
      return undefined;
    },
  };
}
