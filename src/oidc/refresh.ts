import * as client from 'openid-client';
import { AuthError } from '../errors.js';
import type { Logger } from '../log.js';
import { decideSignIn, type SignInRules } from '../policy/sign-in.js';
import type { RefreshOutcome, SessionTokens, TokenRefresher } from '../sessions/store.js';
import type { Role, User } from '../users/store.js';
import { assertIssuedInPast, fetchUserInfoClaims, sessionTokensOf } from './login.js';
import type { ProviderConnection } from './provider.js';

/**
 * When a refresh response carries no ID token (Core 12.2 allows that), the grant is checked again
 * after the access token's lifetime, bounded to this range.
 */
const MIN_RECHECK_MS = 60_000;
const MAX_RECHECK_MS = 60 * 60_000;
const DEFAULT_RECHECK_MS = 5 * 60_000;

/** openid-client's codes for an ID token that arrived but fails a check: the provider's answer is a refusal. */
const REJECTED_ID_TOKEN_CODES = new Set([
  'OAUTH_JWT_CLAIM_COMPARISON_FAILED',
  'OAUTH_JWT_TIMESTAMP_CHECK_FAILED',
  'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED',
  'OAUTH_INVALID_RESPONSE',
  'OAUTH_KEY_SELECTION_FAILED',
  'ID_TOKEN_ISSUED_IN_FUTURE',
  'ID_TOKEN_SUBJECT_CHANGED',
]);

export interface SignInRecheck {
  rules: SignInRules;
  /** `auth.recheck_minutes`: the longest a session goes without its sign-in rules applied again. */
  recheckMs: number;
  /** The user still passes, with another role or other groups than they hold now. */
  onAccessChanged(user: User, access: { role: Role; groups: string[] }): Promise<void>;
}

/** When a session's next refresh (and with it the sign-in rules) is due: the ID token's expiry, or sooner. */
export function recheckBy(tokens: SessionTokens, recheckMs: number, now = Date.now()): SessionTokens {
  return { ...tokens, idTokenExpiresAt: Math.min(tokens.idTokenExpiresAt, now + recheckMs) };
}

/**
 * Redeems refresh tokens with openid-client's `refreshTokenGrant`, which validates any new ID token
 * as at sign-in (Core 12.2); on top, its `iss` and `sub` must name the user the session belongs
 * to. Only `invalid_grant` (RFC 6749 5.2) or a failing ID token counts as the provider's refusal;
 * anything else (no connection, a timeout, a 5xx, a misconfigured client) is "unavailable" and
 * ends no session by itself.
 */
export function createTokenRefresher(
  provider: ProviderConnection,
  log: Logger,
  recheck: SignInRecheck,
): TokenRefresher {
  /**
   * The sign-in rules (domains, groups, admin role) applied again to what the provider says now, so
   * a user who left the allowed group or the admin group loses the session or the role at the
   * latest one recheck interval later, not when the session's 168 hours run out.
   */
  async function stillAdmitted(user: User, claims: Record<string, unknown>): Promise<boolean> {
    const decision = decideSignIn(claims, recheck.rules);
    if (!decision.allowed) {
      log.info(
        { userId: user.id, reason: decision.reason },
        'sign-in rules no longer admit the user; the session ends',
      );
      return false;
    }
    const sameGroups =
      decision.groups.length === user.groups.length && decision.groups.every((group, i) => group === user.groups[i]);
    if (decision.role !== user.role || !sameGroups) {
      await recheck.onAccessChanged(user, { role: decision.role, groups: decision.groups });
    }
    return true;
  }

  return {
    async refresh(refreshToken: string, user: User, now = Date.now()): Promise<RefreshOutcome> {
      try {
        // Through the connection, so a refresh gets the same client-authentication fallback and
        // metadata re-read as a sign-in.
        const { config, response } = await provider.tokenRequest(async (config) => ({
          config,
          response: await client.refreshTokenGrant(config, refreshToken),
        }));
        const claims = response.claims();
        if (!claims || !response.id_token) {
          // No ID token (Core 12.2 allows that): the UserInfo endpoint, where there is one, says who the user is now.
          const current = await fetchUserInfoClaims(config, response.access_token, user.subject);
          if (Object.keys(current).length > 0 && !(await stillAdmitted(user, current))) return { result: 'refused' };
          const expiresIn = response.expiresIn();
          const recheckMs = expiresIn === undefined ? DEFAULT_RECHECK_MS : expiresIn * 1000;
          const bounded = Math.min(Math.max(recheckMs, MIN_RECHECK_MS), MAX_RECHECK_MS, recheck.recheckMs);
          return {
            result: 'refreshed',
            tokens: {
              idTokenExpiresAt: now + bounded,
              ...(response.refresh_token ? { refreshToken: response.refresh_token } : {}),
            },
          };
        }
        assertIssuedInPast(claims, now);
        if (claims.iss !== user.issuer || claims.sub !== user.subject) {
          throw new AuthError('ID_TOKEN_SUBJECT_CHANGED', 'the refreshed ID token names another user');
        }
        const merged = { ...(await fetchUserInfoClaims(config, response.access_token, claims.sub)), ...claims };
        if (!(await stillAdmitted(user, merged))) return { result: 'refused' };
        const tokens = { ...sessionTokensOf(claims, response.refresh_token), idToken: response.id_token };
        return { result: 'refreshed', tokens: recheckBy(tokens, recheck.recheckMs, now) };
      } catch (error) {
        // An ID token signed otherwise than the metadata says is refused even when the provider has
        // just changed its keys (the metadata is read again for the next sign-in): from here an
        // `alg: none` forgery and a change of algorithm look the same.
        const refused = isRefusal(error);
        // Only codes and the provider's error name: a refresh token must never reach the log.
        log.warn(
          {
            userId: user.id,
            code: (error as { code?: unknown }).code,
            error: error instanceof client.ResponseBodyError ? error.error : undefined,
            status: (error as { status?: unknown }).status,
          },
          refused ? 'token refresh refused; the session ends' : 'token refresh failed: provider unavailable',
        );
        return { result: refused ? 'refused' : 'unavailable' };
      }
    },
  };
}

function isRefusal(error: unknown): boolean {
  if (error instanceof client.ResponseBodyError) return error.error === 'invalid_grant';
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && REJECTED_ID_TOKEN_CODES.has(code);
}
