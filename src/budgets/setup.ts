import type { Redis } from 'ioredis';
import type { Config } from '../config/index.js';
import type { Logger } from '../log.js';
import type { MetricsSink } from '../metrics/sink.js';
import type { Storage } from '../storage/database.js';
import { Budgets } from './budgets.js';
import { redisLedger } from './redis-ledger.js';
import { writeBehindLedger } from './ledger.js';
import { sqlCounterStore, sqlLedger } from './sql-ledger.js';
import { BudgetStore } from './store.js';

/**
 * Budgets when they are on (`budgets.enabled`, else whenever a per-user or group budget is
 * configured), counted in Redis when configured, else in the database; undefined otherwise, and
 * then the request path does no budget work at all.
 */
export function createBudgets(
  config: Config,
  storage: Storage,
  redis: Redis | undefined,
  metrics: MetricsSink,
  log: Logger,
): Budgets | undefined {
  const settings = config.budgets;
  const enabled = settings.enabled ?? (settings.per_user !== undefined || Object.keys(settings.groups).length > 0);
  if (!enabled) return undefined;
  // One gateway on SQLite keeps its counters in memory and writes them behind; replicas share them
  // through Redis, else PostgreSQL, on every request.
  const ledger = redis
    ? redisLedger(redis, config.redis.key_prefix, log)
    : storage.kind === 'postgres'
      ? sqlLedger(storage.db, 'postgres')
      : writeBehindLedger(sqlCounterStore(storage.db), (error) =>
          log.warn({ err: error }, 'budget counters could not be written; will retry'),
        );
  return new Budgets(settings, ledger, new BudgetStore(storage.db), {
    metrics: { spend: metrics.budgetSpend, tokens: metrics.budgetTokens, refusals: metrics.budgetRefusals },
  });
}
