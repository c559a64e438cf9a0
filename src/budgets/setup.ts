import type { Redis } from 'ioredis';
import type { Config } from '../config/index.js';
import type { Logger } from '../log.js';
import type { MetricsSink } from '../metrics/sink.js';
import type { Storage } from '../storage/database.js';
import { workerLink } from '../workers/link.js';
import { Budgets, machineBudgetsOf } from './budgets.js';
import { redisLedger } from './redis-ledger.js';
import { writeBehindLedger, type Ledger } from './ledger.js';
import { sqlCounterStore, sqlLedger } from './sql-ledger.js';
import { BudgetStore } from './store.js';

/** `budgets.enabled`, else whether a per-user, group or machine (trusted issuer's) budget is configured. */
export function budgetsEnabled(config: Config): boolean {
  const settings = config.budgets;
  return (
    settings.enabled ??
    (settings.per_user !== undefined ||
      Object.keys(settings.groups).length > 0 ||
      config.auth.trusted_issuers.some((issuer) => issuer.budget !== undefined))
  );
}

/** Budgets on SQLite without Redis: one process keeps the counters (with `gateway.workers`, the primary). */
export function countsBudgetsInProcess(config: Config): boolean {
  return budgetsEnabled(config) && !config.redis.url && config.database.url.startsWith('sqlite:');
}

/**
 * The ledger one process keeps for a gateway on SQLite without Redis: counters in memory, written
 * to the database behind. With `gateway.workers` the primary keeps it for every worker; otherwise
 * undefined (the counters are in Redis or PostgreSQL, shared already).
 */
export function processLedger(config: Config, storage: Storage, log: Logger): Ledger | undefined {
  if (!countsBudgetsInProcess(config)) return undefined;
  return writeBehindSqlLedger(storage, log);
}

function writeBehindSqlLedger(storage: Storage, log: Logger): Ledger {
  return writeBehindLedger(sqlCounterStore(storage.db), (error) =>
    log.warn({ err: error }, 'budget counters could not be written; will retry'),
  );
}

/**
 * Budgets when they are on, counted in Redis when configured, else in PostgreSQL, else (SQLite) in
 * this process's memory or, with workers, the primary's; undefined when off, and then the request
 * path does no budget work at all.
 */
export function createBudgets(
  config: Config,
  storage: Storage,
  redis: Redis | undefined,
  metrics: MetricsSink,
  log: Logger,
): Budgets | undefined {
  if (!budgetsEnabled(config)) return undefined;
  // Replicas share counters through Redis, else PostgreSQL, on every request; on SQLite a lone
  // gateway counts in memory, and workers in the primary's, so a budget is one budget across them.
  const ledger = redis
    ? redisLedger(redis, config.redis.key_prefix, log)
    : storage.kind === 'postgres'
      ? sqlLedger(storage.db, 'postgres', log)
      : (workerLink()?.budgetLedger ?? writeBehindSqlLedger(storage, log));
  return new Budgets(config.budgets, ledger, new BudgetStore(storage.db), {
    metrics: { spend: metrics.budgetSpend, tokens: metrics.budgetTokens, refusals: metrics.budgetRefusals },
    machines: machineBudgetsOf(config.auth.trusted_issuers),
  });
}
