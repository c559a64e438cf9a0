/**
 * What the gateway counts, as the request path sees it. With `gateway.metrics_port` unset nobody can
 * read the figures, so they are not kept: prom-client is not even loaded, and counting costs nothing.
 */
type Labels = Record<string, string | number>;

export interface CounterSink {
  inc(labels?: Labels, value?: number): void;
}

/** One platform request, as the forwarder saw it end. */
export interface AnsweredRequest {
  /** The `model` of the request body, when the gateway read it. */
  model?: string;
  status: number;
  /** From forwarding until the answer ended or the client left. */
  seconds: number;
  /** Event streams only: until the first byte of the answer went to the client. */
  firstByteSeconds?: number;
}

export interface MetricsSink {
  requests: CounterSink;
  upstreamSeconds: { observe(seconds: number): void };
  signIns: CounterSink;
  keyVerifications: CounterSink;
  keyCache: CounterSink;
  providerRefreshes: CounterSink;
  dependencyErrors: CounterSink;
  usageRequests: CounterSink;
  usageTokens: CounterSink;
  budgetSpend: CounterSink;
  budgetTokens: CounterSink;
  budgetRefusals: CounterSink;
}

const ignored = { inc: () => undefined };

export const noMetrics: MetricsSink = {
  requests: ignored,
  upstreamSeconds: { observe: () => undefined },
  signIns: ignored,
  keyVerifications: ignored,
  keyCache: ignored,
  providerRefreshes: ignored,
  dependencyErrors: ignored,
  usageRequests: ignored,
  usageTokens: ignored,
  budgetSpend: ignored,
  budgetTokens: ignored,
  budgetRefusals: ignored,
};
