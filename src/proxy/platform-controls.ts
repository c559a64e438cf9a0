import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Admission, Budgets } from '../budgets/budgets.js';
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
  /** Present when budgets are on. */
  budgets?: Budgets;
}

/**
 * Carries out what the decision allowed on one exchange with the platform: the answer's limit
 * headers, the usage every request is counted in, the tokens charged once reported, the budget
 * reservation and its settlement, and the plan the forwarder follows (the model allow-list, the
 * usage tap).
 */
export function createPlatformControls({ limiter, usage, bodyLimit, budgets }: PlatformControlsOptions) {
  return async function applyControls(
    request: IncomingMessage,
    response: ServerResponse,
    identity: Identity,
    { limits, headers, path, budget }: Allow,
    /** Filled in with the tokens the platform reports; the caller's access log reads it too. */
    spent: TokenUsage = { prompt_tokens: 0, completion_tokens: 0 },
  ): Promise<ExchangePlan> {
    const started = performance.now();
    let reported = false;
    let admission: Admission | undefined;
    // Emitted once: `on` spares the closure `once` wraps a listener in, held while a stream is open.
    response.on('close', () => {
      const status = response.writableFinished ? response.statusCode : 499;
      // A client that left mid-answer (499) is charged what it was sent; a refusal or failure nothing.
      const costMicros = admission?.settle(reported ? spent : undefined, response.statusCode >= 400);
      usage.record({
        userId: identity.user.id,
        keyId: identity.key?.id,
        status,
        latencyMs: performance.now() - started,
        promptTokens: spent.prompt_tokens,
        completionTokens: spent.completion_tokens,
        costMicros,
      });
      if (limits) void limiter.spend(limits, spent.prompt_tokens + spent.completion_tokens).catch(() => undefined);
    });
    // Usage and the model list are recognised on the decoded path, however the client spelt it.
    const plan = await planExchange(request, {
      path,
      models: identity.key?.controls.models ?? undefined,
      bodyLimit,
      costFacts: budget !== undefined,
      onUsage: (usage) => {
        reported = true;
        spent.prompt_tokens = usage.prompt_tokens;
        spent.completion_tokens = usage.completion_tokens;
      },
    });
    // Only answers that report usage are charged: anything else costs the platform no tokens.
    if (budgets && budget && plan.onUsage) {
      const admitted = budgets.admit(budget, {
        model: plan.model,
        maxTokens: plan.maxTokens,
        bodyBytes: plan.bodyBytes ?? 0,
      });
      admission = admitted instanceof Promise ? await admitted : admitted;
      // The client left while the ledger answered: nothing will be sent, so nothing is held.
      if (response.closed) admission.settle(undefined, true);
      plan.answerHeaders = headers ? withHeaders(headers, admission.headers) : admission.headers;
      plan.meter = admission;
    } else plan.answerHeaders = headers;
    return plan;
  };
}

/** `added` joined to `headers`: a second warning joins the first (a key's expiry) rather than replacing it. */
function withHeaders(
  headers: Readonly<Record<string, string>>,
  added: Readonly<Record<string, string>>,
): Record<string, string> {
  const joined = { ...headers };
  for (const name in added) {
    const current = joined[name];
    joined[name] = current === undefined ? added[name]! : `${current} ${added[name]!}`;
  }
  return joined;
}

export type PlatformControls = ReturnType<typeof createPlatformControls>;
