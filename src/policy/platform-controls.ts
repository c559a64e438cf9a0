import type { IncomingMessage, ServerResponse } from 'node:http';
import { ForbiddenError } from '../errors.js';
import type { BodyLimit } from '../http/body.js';
import type { Identity } from '../identity/identify.js';
import { strictPath } from './access.js';
import { DEFAULT_CONTROLS, effectiveLimit, missingScope, type ControlCaps, type ScopeRules } from '../keys/controls.js';
import type { Limits, RateLimiter } from '../limits/rate-limiter.js';
import { planExchange, type ExchangePlan } from '../proxy/exchange.js';
import type { TokenUsage } from '../usage/extract.js';
import type { UsageRecorder } from '../usage/recorder.js';

export interface PlatformControlsOptions {
  scopeRules: ScopeRules;
  limiter: RateLimiter;
  usage: UsageRecorder;
  defaults: {
    keyRequestsPerMinute: number;
    keyTokensPerMinute: number;
    userRequestsPerMinute: number;
    userTokensPerMinute: number;
  };
  caps: ControlCaps;
  /** The largest request body read to check its model or stream. */
  bodyLimit: BodyLimit;
}

const EXPIRY_WARNING_MS = 7 * 86_400_000;

/**
 * What a caller may do on the platform beyond being let in: a key's scopes and models, request and
 * token limits per key and per user, and the usage every request is counted in. Returns the plan
 * the forwarder follows for this exchange.
 */
export function createPlatformControls(options: PlatformControlsOptions) {
  const { scopeRules, limiter, usage, defaults, caps, bodyLimit } = options;

  return async function applyControls(
    request: IncomingMessage,
    response: ServerResponse,
    identity: Identity,
    path: string,
  ): Promise<ExchangePlan> {
    const controls = identity.key?.controls ?? DEFAULT_CONTROLS;
    // A scoped key is judged on the normalised path, so `/v1/train/../chat` cannot pass as training.
    const method = request.method ?? 'GET';
    const judged = controls.scopes.includes('all') ? path : strictPath(request.url ?? '/');
    const needed = missingScope(controls.scopes, method, judged, scopeRules);
    if (needed) {
      throw new ForbiddenError(
        'insufficient_scope',
        `This API key lacks the "${needed}" scope needed for ${method} ${judged}.`,
      );
    }
    const limits: Limits = {
      keyId: identity.key?.id ?? `session:${identity.user.id}`,
      userId: identity.user.id,
      keyRequests: identity.key
        ? effectiveLimit(controls.requests_per_minute, defaults.keyRequestsPerMinute, caps.maxRequestsPerMinute)
        : 0,
      keyTokens: identity.key
        ? effectiveLimit(controls.tokens_per_minute, defaults.keyTokensPerMinute, caps.maxTokensPerMinute)
        : 0,
      userRequests: defaults.userRequestsPerMinute,
      userTokens: defaults.userTokensPerMinute,
    };
    const limited = limiter.applies(limits);
    if (limited) {
      for (const [name, value] of Object.entries(await limiter.admit(limits))) response.setHeader(name, value);
    }
    const expiresAt = identity.key?.expires_at;
    if (expiresAt !== null && expiresAt !== undefined && expiresAt - Date.now() < EXPIRY_WARNING_MS) {
      response.setHeader(
        'x-warning',
        `This API key expires on ${new Date(expiresAt).toISOString()}; create a new one at /v1/auth/account.`,
      );
    }

    const started = performance.now();
    const spent: TokenUsage = { prompt_tokens: 0, completion_tokens: 0 };
    response.once('close', () => {
      usage.record({
        userId: identity.user.id,
        keyId: identity.key?.id,
        status: response.writableFinished ? response.statusCode : 499,
        latencyMs: performance.now() - started,
        promptTokens: spent.prompt_tokens,
        completionTokens: spent.completion_tokens,
      });
      if (limited) void limiter.spend(limits, spent.prompt_tokens + spent.completion_tokens).catch(() => undefined);
    });
    // Usage and the model list are recognised on the decoded path, however the client spelt it.
    return planExchange(request, {
      path,
      models: controls.models ?? undefined,
      bodyLimit,
      onUsage: (reported) => {
        spent.prompt_tokens = reported.prompt_tokens;
        spent.completion_tokens = reported.completion_tokens;
      },
    });
  };
}

export type PlatformControls = ReturnType<typeof createPlatformControls>;
