import * as client from 'openid-client';
import { AuthError, ProviderError } from '../errors.js';
import { unavailableDependency } from '../http/dependency-errors.js';
import { isClientAuthRefusal } from './provider.js';

/**
 * Why a sign-in failed, from a fixed set: what the person is told, what the audit log and the
 * metrics record. The provider's own error string never becomes one of these by itself (it is
 * attacker-chosen on the callback URL), so labels and audit reasons stay bounded; it is shown
 * only as a detail.
 */
export const SIGN_IN_FAILURES = {
  access_denied: {
    status: 403,
    title: 'Sign-in was not completed',
    message:
      'You declined the sign-in, or the sign-in provider did not allow this account to use this service. Sign in again if that was a mistake, or ask the administrator for access.',
  },
  consent_required: {
    status: 403,
    title: 'Sign-in was not completed',
    message:
      'You declined to let this service see your account, or have not agreed to it yet. Sign in again and accept the request to continue.',
  },
  login_required: {
    status: 403,
    title: 'Sign-in was not completed',
    message: 'The sign-in provider needs you to sign in again. Try again and enter your credentials.',
  },
  interaction_required: {
    status: 403,
    title: 'Sign-in was not completed',
    message:
      'The sign-in provider needs you to finish a step on its page (choose an account, confirm a second factor). Try again and complete it.',
  },
  sign_in_expired: {
    status: 400,
    title: 'Sign-in expired',
    message: 'Sign-in expired, try again. The sign-in link can be used once and only for a few minutes.',
  },
  flow_missing: {
    status: 400,
    title: 'Sign-in expired',
    message:
      'This sign-in was not started in this browser, or its cookie expired. Sign-in expired, try again from the same browser.',
  },
  flow_unknown: {
    status: 400,
    title: 'Sign-in expired',
    message: 'This sign-in has expired or was already completed (unknown sign-in flow). Sign-in expired, try again.',
  },
  token_invalid: {
    status: 400,
    title: 'Sign-in failed',
    message: 'The answer from the sign-in provider could not be verified, so you were not signed in.',
  },
  client_rejected: {
    status: 502,
    title: 'Sign-in is misconfigured',
    message:
      'The sign-in provider does not accept this service’s credentials. Only the administrator can fix this: please tell them (the gateway log says what to change).',
  },
  provider_refused: {
    status: 502,
    title: 'Sign-in failed',
    message:
      'The sign-in provider refused to complete the sign-in. Try again; if it persists, tell the administrator, who finds the details in the gateway log.',
  },
  provider_unavailable: {
    status: 503,
    title: 'Sign-in is unavailable',
    message: 'The sign-in provider cannot be reached right now. Please try again in a minute.',
  },
  database_unavailable: {
    status: 503,
    title: 'Temporarily unavailable',
    message: 'Sign-in is temporarily unavailable on our side. Please try again in a minute.',
  },
  userinfo_unavailable: {
    status: 503,
    title: 'Sign-in is unavailable',
    message:
      'The sign-in provider did not answer the request for your profile, so your email address could not be checked. Please try again in a minute.',
  },
  provider_mismatch: {
    status: 400,
    title: 'Sign-in was not completed',
    message:
      'This sign-in came back from another provider than the one it was started with, so it was refused. Sign in again and choose your provider.',
  },
  other: {
    status: 403,
    title: 'Sign-in was not completed',
    message: 'The sign-in provider reported an error. Try again; if it persists, tell the administrator.',
  },
} as const satisfies Record<string, { status: number; title: string; message: string }>;

export type SignInFailureReason = keyof typeof SIGN_IN_FAILURES;

export interface SignInFailure {
  reason: SignInFailureReason;
  /** The provider's own code, for the page's details and the log; never a label. */
  providerCode?: string;
}

/** The longest provider code shown or logged; longer is cut. */
const MAX_CODE_LENGTH = 64;

/** Codes of an authorization error response (Core 3.1.2.6, RFC 6749 4.1.2.1) a person can act on. */
const CALLBACK_ERRORS = new Map<string, SignInFailureReason>([
  ['access_denied', 'access_denied'],
  ['consent_required', 'consent_required'],
  ['login_required', 'login_required'],
  ['interaction_required', 'interaction_required'],
  ['account_selection_required', 'interaction_required'],
  ['temporarily_unavailable', 'provider_unavailable'],
  ['server_error', 'provider_unavailable'],
]);

/**
 * The `error` a provider sent back to the callback, mapped to the fixed set. A Map, not an object:
 * the code comes from the query string, and `?error=toString` must not find Object.prototype.
 */
export function describeCallbackError(code: string): SignInFailure {
  return { reason: CALLBACK_ERRORS.get(code) ?? 'other', providerCode: code.slice(0, MAX_CODE_LENGTH) };
}

/** Token endpoint codes meaning "this code is no good": RFC 6749's, and glewlwyd's own `invalid_code`. */
const EXPIRED_CODE_ERRORS = new Set(['invalid_grant', 'invalid_code']);

/** What went wrong in finishing a sign-in, from the error it threw. */
export function describeSignInError(error: unknown): SignInFailure {
  if (error instanceof AuthError) {
    if (error.code === 'LOGIN_FLOW_MISSING') return { reason: 'flow_missing' };
    if (error.code === 'LOGIN_FLOW_UNKNOWN') return { reason: 'flow_unknown' };
    if (error.code === 'USERINFO_UNAVAILABLE') return { reason: 'userinfo_unavailable' };
    if (error.code === 'LOGIN_FLOW_PROVIDER_MISMATCH') return { reason: 'provider_mismatch' };
    return { reason: 'token_invalid' };
  }
  if (error instanceof ProviderError) return { reason: 'provider_unavailable' };
  if (error instanceof client.ResponseBodyError) {
    const providerCode = error.error.slice(0, MAX_CODE_LENGTH);
    if (EXPIRED_CODE_ERRORS.has(error.error)) return { reason: 'sign_in_expired', providerCode };
    if (isClientAuthRefusal(error)) return { reason: 'client_rejected', providerCode };
    return { reason: 'provider_refused', providerCode };
  }
  if (isClientAuthRefusal(error)) return { reason: 'client_rejected' };
  if (isNetworkFailure(error)) return { reason: 'provider_unavailable' };
  if (unavailableDependency(error)) return { reason: 'database_unavailable' };
  if (error instanceof client.AuthorizationResponseError || error instanceof client.WWWAuthenticateChallengeError) {
    return { reason: 'provider_refused' };
  }
  return { reason: 'token_invalid' };
}

/** fetch() reports an unreachable or timed-out provider as a TypeError or AbortError, cause attached. */
export function isNetworkFailure(error: unknown): boolean {
  for (let current = error; current instanceof Error; current = current.cause) {
    if (current.name === 'AbortError' || current.name === 'TimeoutError') return true;
    if (current instanceof TypeError && current.message === 'fetch failed') return true;
  }
  return false;
}
