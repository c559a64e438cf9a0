import { createServer, type Server } from 'node:http';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ModelLabels } from './model-labels.js';
import type { AnsweredRequest, MetricsSink } from './sink.js';

/** From a quick cached answer to a long generation. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** Everything Gatehouse exports to Prometheus; one registry per gateway so tests stay independent. */
export class Metrics implements MetricsSink {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'gatehouse_requests_total',
    help: 'Requests answered, by route class, status and authentication method.',
    labelNames: ['route', 'status', 'auth'] as const,
    registers: [this.registry],
  });
  readonly upstreamSeconds = new Histogram({
    name: 'gatehouse_upstream_response_seconds',
    help: 'Time until the platform sent response headers.',
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly requestSeconds = new Histogram({
    name: 'gatehouse_request_duration_seconds',
    help: 'Platform requests: from forwarding until the answer ended or the client left, by model and status class.',
    labelNames: ['model', 'status_class'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly firstByteSeconds = new Histogram({
    name: 'gatehouse_stream_first_byte_seconds',
    help: 'Event streams: from forwarding until the first byte of the answer reached the client, by model.',
    labelNames: ['model'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly signIns = new Counter({
    name: 'gatehouse_sign_ins_total',
    help: 'Sign-ins, by result and reason for failures.',
    labelNames: ['result', 'reason'] as const,
    registers: [this.registry],
  });
  readonly keyVerifications = new Counter({
    name: 'gatehouse_key_verifications_total',
    help: 'API key verifications, by result (valid, invalid_api_key, expired_api_key, ...).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly keyCache = new Counter({
    name: 'gatehouse_key_cache_lookups_total',
    help: 'API key lookups answered from memory (hit) or not (miss).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly providerRefreshes = new Counter({
    name: 'gatehouse_provider_metadata_refreshes_total',
    help: 'Provider discovery and JWKS fetches, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly dependencyErrors = new Counter({
    name: 'gatehouse_dependency_errors_total',
    help: 'Requests refused because the database or Redis was unavailable.',
    labelNames: ['dependency'] as const,
    registers: [this.registry],
  });
  readonly usageRequests = new Counter({
    name: 'gatehouse_usage_requests_total',
    help: 'Platform requests by signed-in callers, by status class.',
    labelNames: ['status_class'] as const,
    registers: [this.registry],
  });
  readonly usageTokens = new Counter({
    name: 'gatehouse_usage_tokens_total',
    help: 'Tokens the platform reported in usage, by kind (prompt, completion).',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  /** Labelled by the group whose budget applied, one of budgets.groups or "none": bounded by the configuration. */
  readonly budgetSpend = new Counter({
    name: 'gatehouse_budget_spend_total',
    help: 'Spend charged to budgets, in budgets.currency, by budget group.',
    labelNames: ['group'] as const,
    registers: [this.registry],
  });
  readonly budgetTokens = new Counter({
    name: 'gatehouse_budget_tokens_total',
    help: 'Tokens charged to budgets, by budget group.',
    labelNames: ['group'] as const,
    registers: [this.registry],
  });
  readonly budgetRefusals = new Counter({
    name: 'gatehouse_budget_refusals_total',
    help: 'Requests refused with budget_exceeded, by the budget that ran out (user, group, key).',
    labelNames: ['scope'] as const,
    registers: [this.registry],
  });
  readonly activeSessions: Gauge;
  private readonly models: ModelLabels;

  constructor(countActiveSessions: () => Promise<number>, metricsModels: readonly string[] = []) {
    // Unprefixed (process_cpu_seconds_total, nodejs_heap_size_used_bytes): the names stock
    // dashboards and alerts look for.
    collectDefaultMetrics({ register: this.registry });
    this.models = new ModelLabels(metricsModels);
    this.activeSessions = new Gauge({
      name: 'gatehouse_active_sessions',
      help: 'Signed-in browser sessions that have not expired.',
      registers: [this.registry],
      // Every worker counts the same rows: summing them would multiply the figure.
      aggregator: 'first',
      async collect() {
        this.set(await countActiveSessions().catch(() => Number.NaN));
      },
    });
  }

  observeAnswer(answer: AnsweredRequest): void {
    const model = this.models.labelFor(answer.model, answer.status >= 200 && answer.status < 300);
    this.requestSeconds.observe({ model, status_class: `${Math.floor(answer.status / 100)}xx` }, answer.seconds);
    if (answer.firstByteSeconds !== undefined) this.firstByteSeconds.observe({ model }, answer.firstByteSeconds);
  }

  /**
   * With gateway.workers > 1 the primary serves the scrape and asks every worker for its figures
   * (prom-client's cluster aggregation): counters and histograms are summed, so a scrape sees the
   * whole service, not the share of one worker.
   */
  answerScrapesFromPrimary(): void {
    AggregatorRegistry.setRegistries(this.registry);
    // Constructing one is how prom-client starts answering the primary's requests in a worker.
    new AggregatorRegistry();
  }
}

/** What a scrape reads: one gateway's registry, or the sum over every worker. */
export interface MetricsSource {
  metrics(): Promise<string>;
  contentType: string;
}

/** The primary's view of every worker's metrics. */
export function workersMetrics(): MetricsSource {
  const aggregator = new AggregatorRegistry();
  return { metrics: () => aggregator.clusterMetrics(), contentType: aggregator.contentType };
}

/** A listener of its own, never the public port: metrics reveal traffic and users' activity. */
export function serveMetrics(source: MetricsSource, host: string, port: number): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404).end();
      return;
    }
    source
      .metrics()
      .then((body) => response.writeHead(200, { 'content-type': source.contentType }).end(body))
      .catch(() => response.writeHead(500).end());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
