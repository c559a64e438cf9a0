import { ForbiddenError, HttpError } from '../errors.js';

/**
 * `inference`, `training`, `read` and `all` open the platform; `keys` (its owner's keys) and `admin`
 * (the admin API, while its owner is an administrator) open the gateway's own API, and `all` does
 * not include them, so a key made for a program cannot manage keys or administer. `scim` lets an
 * administrator's key provision users at /scim/v2 (src/routes/scim.ts).
 */
export const SCOPES = ['inference', 'training', 'read', 'all', 'keys', 'admin', 'scim'] as const;
export type Scope = (typeof SCOPES)[number];
const PLATFORM_SCOPES: readonly Scope[] = ['inference', 'training', 'read', 'all'];

/** What a key may do beyond "it is valid": set at creation, capped by the operator. */
export interface KeyControls {
  scopes: Scope[];
  /** Models the key may name in `model`; null = any. */
  models: string[] | null;
  /** Per-key limits; null = the configured default. */
  requests_per_minute: number | null;
  tokens_per_minute: number | null;
}

export const DEFAULT_CONTROLS: KeyControls = {
  scopes: ['all'],
  models: null,
  requests_per_minute: null,
  tokens_per_minute: null,
};

export interface ScopeRules {
  inference: RegExp[];
  training: RegExp[];
}

export interface ControlCaps {
  maxRequestsPerMinute: number;
  maxTokensPerMinute: number;
}

/** Validates controls asked for at creation (JSON API, form, CLI) and applies the operator's caps. */
export function parseControls(
  input: {
    scopes?: unknown;
    models?: unknown;
    requests_per_minute?: unknown;
    tokens_per_minute?: unknown;
  },
  caps: ControlCaps,
): KeyControls {
  const scopes = input.scopes === undefined ? ['all'] : input.scopes;
  if (
    !Array.isArray(scopes) ||
    scopes.length === 0 ||
    !scopes.every((s) => (SCOPES as readonly unknown[]).includes(s))
  ) {
    throw new HttpError(400, 'invalid_scopes', `scopes must be a non-empty list of ${SCOPES.join(', ')}.`);
  }
  const models = input.models ?? null;
  if (
    models !== null &&
    (!Array.isArray(models) ||
      models.length === 0 ||
      models.length > 100 ||
      !models.every((m) => typeof m === 'string' && m.length > 0 && m.length <= 200))
  ) {
    throw new HttpError(
      400,
      'invalid_models',
      'models must be a list of 1 to 100 model names, or absent for any model.',
    );
  }
  return {
    scopes: [...new Set(scopes as Scope[])],
    models: models as string[] | null,
    requests_per_minute: limitOf('requests_per_minute', input.requests_per_minute, caps.maxRequestsPerMinute),
    tokens_per_minute: limitOf('tokens_per_minute', input.tokens_per_minute, caps.maxTokensPerMinute),
  };
}

function limitOf(name: string, value: unknown, cap: number): number | null {
  // An absent limit stays absent: the operator's default applies, and may change later.
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new HttpError(400, `invalid_${name}`, `${name} must be a whole number of at least 1.`);
  }
  if (cap > 0 && value > cap)
    throw new HttpError(400, `${name}_too_high`, `${name} may be at most ${cap} on this gateway.`);
  return value;
}

/**
 * The scope a request needs, or undefined when the key's scopes allow it. `read` opens GET and HEAD
 * anywhere; `inference` and `training` open the configured paths with any method.
 */
export function missingScope(
  scopes: readonly Scope[],
  method: string,
  path: string,
  rules: ScopeRules,
): Scope | undefined {
  if (scopes.includes('all')) return undefined;
  const safe = method === 'GET' || method === 'HEAD';
  if (safe && scopes.includes('read')) return undefined;
  const inference = rules.inference.some((rule) => rule.test(path));
  if (inference && scopes.includes('inference')) return undefined;
  const training = rules.training.some((rule) => rule.test(path));
  if (training && scopes.includes('training')) return undefined;
  if (inference) return 'inference';
  if (training) return 'training';
  return safe ? 'read' : 'all';
}

/**
 * A key that manages keys may only hand out what it holds itself: each scope it grants (`all`
 * covers the other platform scopes), models within its own list, limits no higher than its own.
 * Otherwise a narrow `keys` key could mint, or rotate into view, a wider one.
 */
export function assertNoWiderThan(holder: KeyControls, granted: KeyControls): void {
  const holds = (scope: Scope) =>
    holder.scopes.includes(scope) || (PLATFORM_SCOPES.includes(scope) && holder.scopes.includes('all'));
  const wider = granted.scopes.find((scope) => !holds(scope));
  if (wider) {
    throw new ForbiddenError(
      'scope_not_held',
      `This API key cannot grant the "${wider}" scope, which it lacks itself.`,
    );
  }
  const ownModels = holder.models;
  if (ownModels && (!granted.models || granted.models.some((model) => !ownModels.includes(model)))) {
    throw new ForbiddenError('models_not_held', 'This API key can only grant models from its own list.');
  }
  for (const limit of ['requests_per_minute', 'tokens_per_minute'] as const) {
    const own = holder[limit];
    if (own !== null && (granted[limit] === null || granted[limit] > own)) {
      throw new ForbiddenError('limit_not_held', `This API key can only grant ${limit} of at most ${own}.`);
    }
  }
}

/** The limit in force for a key: its own, else the default; a cap bounds the default too. */
export function effectiveLimit(own: number | null, fallback: number, cap: number): number {
  if (own !== null) return own;
  if (cap > 0) return fallback > 0 ? Math.min(fallback, cap) : cap;
  return fallback;
}
