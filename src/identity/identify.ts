import type { IncomingHttpHeaders } from 'node:http';
import type { KeyControls } from '../keys/controls.js';
import type { User } from '../users/store.js';
import type { ServiceIdentity } from './jwt-bearer.js';

export type AuthMethod = 'session' | 'api_key' | 'jwt_bearer';

export interface Identity {
  user: User;
  method: AuthMethod;
  /** The API key the request came with, and what it may do. */
  key?: { id: string; controls: KeyControls; expires_at: number | null };
  /** ID token of the sign-in, for the provider's logout; only for sessions. */
  idToken?: string | null;
  /** The trusted issuer and subject of a JWT bearer; only for `jwt_bearer`. */
  service?: ServiceIdentity;
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
 * Reads one kind of credential (a session cookie, an API key, a JWT bearer). Returns undefined
 * at once when the request does not carry this kind at all, so the next loader is asked. Otherwise
 * the loader decides: the identity (also set on `request.identity`), undefined for a credential
 * that names no one (an ended session), or an AuthError saying why a present credential is wrong.
 */
export interface CredentialLoader {
  load(request: CallerRequest): Promise<Identity | undefined> | undefined;
}

export interface Identifier {
  /**
   * Who sent this request, or undefined when it carries no credential at all. A credential that is
   * present but wrong throws an AuthError saying why, so it is never mistaken for "not signed in".
   */
  identify(request: CallerRequest): Promise<Identity | undefined>;
}

const NO_CREDENTIAL = Promise.resolve(undefined);

/**
 * Asks each loader in turn, as oauth2-proxy's session loaders: the first that recognises its kind of
 * credential decides. The loader's own promise is returned, adding none on the request path.
 */
export function createIdentifier(loaders: readonly CredentialLoader[]): Identifier {
  return {
    identify(request) {
      for (const loader of loaders) {
        const identity = loader.load(request);
        if (identity) return identity;
      }
      return NO_CREDENTIAL;
    },
  };
}
