import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTPayload } from 'jose';
import type { AuditLog } from '../audit/log.js';
import { sha256 } from '../crypto/tokens.js';
import { HttpError } from '../errors.js';
import type { SessionStore } from '../sessions/store.js';
import type { Db } from '../storage/database.js';
import type { SignInProviders } from './providers.js';

/** The RP's Back-Channel Logout URI, registered at the provider by the operator. */
export const BACKCHANNEL_LOGOUT_PATH = '/v1/auth/backchannel-logout';

/** Back-Channel Logout 1.0 section 2.4: the member of `events` that makes a JWT a logout token. */
const LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const CLOCK_TOLERANCE_SECONDS = 30;
/** A logout token is sent the moment the user signs out; an older one is stale or replayed. */
const MAX_TOKEN_AGE_SECONDS = 5 * 60;
const MAX_BODY_BYTES = 64 * 1024;

/** What a logout token asks for: end the session `sid`, or every session of `subject`, at `issuer`. */
export interface LogoutRequest {
  issuer: string;
  subject?: string;
  sid?: string;
}

/** A logout request that cannot be honoured; answered 400 as section 2.8 requires. */
export class LogoutTokenError extends HttpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(400, 'invalid_request', message, options);
  }
}

/** Turns a logout token into what it asks for, or throws a LogoutTokenError saying why not. */
export interface LogoutTokenVerifier {
  verify(logoutToken: string, now?: number): Promise<LogoutRequest>;
}

/**
 * Validates a logout token as Back-Channel Logout 1.0 section 2.6 lists: signature by a key in the
 * provider's JWKS with an algorithm it advertises for ID tokens (never `none`, never a MAC), `iss`,
 * `aud`, `iat` (at most five minutes old, 30 s of skew), `exp` when present, the logout event,
 * `sub` or `sid`, no `nonce` (so an ID token cannot pass for one), and a `jti` seen only once.
 * `exp` is not demanded: drafts before 1.0 final did not require it, and the age bound on `iat`
 * limits a token's life anyway. openid-client 6 has no helper for logout tokens, so jose does the
 * JWT part. The token's `iss`, read before the signature is checked, only picks which provider's
 * keys, issuer and client id it is then checked against: a token naming provider A must be signed
 * by A's keys and addressed to the client registered at A.
 */
export function createLogoutTokenVerifier(providers: SignInProviders, db: Db): LogoutTokenVerifier {
  const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  const keysAt = (uri: string) => {
    let keys = keySets.get(uri);
    if (!keys) keySets.set(uri, (keys = createRemoteJWKSet(new URL(uri))));
    return keys;
  };

  return {
    async verify(logoutToken, now = Date.now()) {
      let claimed: unknown;
      try {
        claimed = decodeJwt(logoutToken).iss;
      } catch (error) {
        throw new LogoutTokenError(`the logout token is not a JWT: ${(error as Error).message}`, { cause: error });
      }
      const provider = typeof claimed === 'string' ? providers.byIssuer(claimed) : undefined;
      if (!provider || typeof claimed !== 'string') {
        throw new LogoutTokenError('the logout token’s iss is not one of this gateway’s sign-in providers');
      }
      let config;
      try {
        config = provider.connection.configuration();
      } catch (error) {
        throw new LogoutTokenError('the sign-in provider metadata is not loaded yet', { cause: error });
      }
      const metadata = config.serverMetadata();
      if (!metadata.jwks_uri) throw new LogoutTokenError('the provider publishes no jwks_uri');
      const algorithms = (metadata.id_token_signing_alg_values_supported ?? ['RS256']).filter(
        (alg) => alg !== 'none' && !alg.startsWith('HS'),
      );
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(logoutToken, keysAt(metadata.jwks_uri), {
          // byIssuer matched it to the metadata's issuer (Entra's with the tenant id in place).
          issuer: claimed,
          audience: config.clientMetadata().client_id,
          algorithms,
          clockTolerance: CLOCK_TOLERANCE_SECONDS,
          maxTokenAge: MAX_TOKEN_AGE_SECONDS,
          requiredClaims: ['iat', 'jti'],
          currentDate: new Date(now),
        }));
      } catch (error) {
        throw new LogoutTokenError(`the logout token is not valid: ${(error as Error).message}`, { cause: error });
      }
      const events = payload.events;
      if (!isObject(events) || !isObject(events[LOGOUT_EVENT])) {
        throw new LogoutTokenError(`the logout token's events claim lacks an object for ${LOGOUT_EVENT}`);
      }
      if ('nonce' in payload) throw new LogoutTokenError('a logout token must not contain a nonce claim');
      const subject = nonEmptyString(payload.sub);
      const sid = nonEmptyString(payload.sid);
      if (subject === undefined && sid === undefined) {
        throw new LogoutTokenError('the logout token names neither sub nor sid');
      }
      const jti = nonEmptyString(payload.jti);
      if (jti === undefined) throw new LogoutTokenError('the logout token has no jti');
      const usableUntil = (payload.iat! + MAX_TOKEN_AGE_SECONDS + CLOCK_TOLERANCE_SECONDS) * 1000;
      if (!(await firstUse(db, claimed, jti, usableUntil))) {
        throw new LogoutTokenError('this logout token was already used');
      }
      return { issuer: claimed, ...(subject ? { subject } : {}), ...(sid ? { sid } : {}) };
    },
  };
}

/**
 * Records a `jti` for as long as its token could pass the age check; the primary key makes a
 * replay fail even when it reaches another replica.
 */
async function firstUse(db: Db, issuer: string, jti: string, expiresAt: number): Promise<boolean> {
  const result = await db
    .insertInto('used_logout_tokens')
    .values({ jti_hash: sha256(`${issuer}\n${jti}`), expires_at: expiresAt })
    .onConflict((conflict) => conflict.column('jti_hash').doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

/** Forgets the `jti`s of logout tokens too old to pass the age check again; run periodically. */
export async function purgeUsedLogoutTokens(db: Db, now = Date.now()): Promise<void> {
  await db.deleteFrom('used_logout_tokens').where('expires_at', '<=', now).execute();
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

export interface BackchannelLogoutOptions {
  verifier: LogoutTokenVerifier;
  sessions: SessionStore;
  audit: AuditLog;
}

/**
 * `POST /v1/auth/backchannel-logout`, the RP's Back-Channel Logout URI (section 2.5): the provider's
 * server posts a form-encoded `logout_token` here when a user signs out there or is removed. Nothing
 * advertises it; the operator registers `https://<powerml.website>/v1/auth/backchannel-logout` as
 * the client's `backchannel_logout_uri` at the provider. No session cookie and no Origin check
 * apply: the caller is the provider, and the signed token is the only credential.
 */
export async function backchannelLogoutRoutes(
  app: FastifyInstance,
  { verifier, sessions, audit }: BackchannelLogoutOptions,
): Promise<void> {
  // Section 2.5 specifies a form body; any other type reaches the handler unread and is refused there.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string', bodyLimit: MAX_BODY_BYTES },
    (_request, body, done) => done(null, new URLSearchParams(body as string)),
  );
  app.addContentTypeParser('*', { bodyLimit: MAX_BODY_BYTES }, (_request, _payload, done) => done(null));
  // Section 2.8: a failure is a 400, with an error code and description the provider may log.
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (!(error instanceof LogoutTokenError) && (error.statusCode === undefined || error.statusCode >= 500))
      throw error;
    // The provider rarely shows its callers' answers; the operator finds a misconfiguration here.
    request.log.warn({ reason: error.message }, 'back-channel logout refused');
    return sendLogoutError(reply, error.message);
  });

  app.post(BACKCHANNEL_LOGOUT_PATH, async (request, reply) => {
    const tokens = request.body instanceof URLSearchParams ? request.body.getAll('logout_token') : [];
    if (tokens.length !== 1 || !tokens[0]) {
      throw new LogoutTokenError('send exactly one logout_token, form-encoded (application/x-www-form-urlencoded)');
    }
    const logout = await verifier.verify(tokens[0]);
    const users = await sessions.endByProvider(logout.issuer, logout);
    for (const user of users)
      audit.record(request, { event: 'sign_out', actor: user, detail: { reason: 'backchannel' } });
    return reply.code(200).header('cache-control', 'no-store').send();
  });
}

function sendLogoutError(reply: FastifyReply, description: string): FastifyReply {
  return reply
    .code(400)
    .header('cache-control', 'no-store')
    .type('application/json; charset=utf-8')
    .send({ error: 'invalid_request', error_description: description });
}
