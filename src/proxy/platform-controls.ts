import type { IncomingMessage, ServerResponse } from 'node:http';
import type { BodyLimit } from '../http/body.js';
import type { Identity } from '../identity/identify.js';
import type { RateLimiter } from '../limits/rate-limiter.js';
import type { Allow } from '../policy/decide.js';
import type { TokenUsage } from '../usage/extract.js';
import type { UsageRecorder } from '../usage/recorder.js';
import { planExchange, type ExchangePlan } from './exchange.js';

export interface PlatformControlsOptions {
  limiter: RateLimiter;
  usage: UsageRecorder;
  /** The largest request body read to check its model or stream. */
  bodyLimit: BodyLimit;
}

/**
 * Carries out what the decision allowed on one exchange with the platform: the answer's limit
 * headers, the usage every request is counted in, the tokens charged once reported, and the plan
 * the forwarder follows (the model allow-list, the usage tap).
 */
export function createPlatformControls({ limiter, usage, bodyLimit }: PlatformControlsOptions) {
  return function applyControls(
    request: IncomingMessage,
    response: ServerResponse,
    identity: Identity,
    { limits, headers, path }: Allow,
    /** Filled in with the tokens the platform reports; the caller's access log reads it too. */
    spent: TokenUsage = { prompt_tokens: 0, completion_tokens: 0 },
  ): Promise<ExchangePlan> {
    if (headers) for (const name in headers) response.setHeader(name, headers[name]!);
    const started = performance.now();
    response.once('close', () => {
      usage.record({
        userId: identity.user.id,
        keyId: identity.key?.id,
        status: response.writableFinished ? response.statusCode : 499,
        latencyMs: performance.now() - started,
        promptTokens: spent.prompt_tokens,
        completionTokens: spent.completion_tokens,
      });
      if (limits) void limiter.spend(limits, spent.prompt_tokens + spent.completion_tokens).catch(() => undefined);
    });
    // Usage and the model list are recognised on the decoded path, however the client spelt it.
    return planExchange(request, {
      path,
      models: identity.key?.controls.models ?? undefined,
      bodyLimit,
      onUsage: (reported) => {
        spent.prompt_tokens = reported.prompt_tokens;
        spent.completion_tokens = reported.completion_tokens;
      },
    });
  };
}

export type PlatformControls = ReturnType<typeof createPlatformControls>;
