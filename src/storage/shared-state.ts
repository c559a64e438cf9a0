import type { Redis } from 'ioredis';
import type { ReadinessCheck } from '../http/health.js';
import {
  memoryFailureCounter,
  namespacedFailureCounter,
  redisFailureCounter,
  type FailureCounter,
} from '../identity/failure-limiter.js';
import { memoryWindowCounter, redisWindowCounter, type WindowCounter } from '../limits/rate-limiter.js';
import type { Logger } from '../log.js';
import { workerLink } from '../workers/link.js';
import { createChangeBus, type ChangeBus } from './changes.js';
import type { Storage } from './database.js';
import { connectRedis } from './redis.js';
import { Revocations } from './revocations.js';
import { noSharedCache, redisCache, type SharedCache } from './shared-cache.js';

export interface SharedState {
  redis?: Redis;
  cache: SharedCache;
  bus: ChangeBus;
  revocations: Revocations;
  /** Rate-limit windows: in Redis when configured, else in the primary's memory with workers, else here. */
  windowCounter: WindowCounter;
  /** Failed sign-ins per address, shared the same way as the rate limits. */
  failureCounter: FailureCounter;
  /** Device codes asked for per address (RFC 8628), shared the same way. */
  deviceCodeRequests: FailureCounter;
  /** Readiness that depends on other processes (every worker ready). */
  checks: ReadinessCheck[];
  close(): Promise<void>;
}

/**
 * What gateway processes share beyond the database: Redis when configured, change notices always,
 * and with `gateway.workers` > 1 the primary process's counters and change relay.
 */
export async function openSharedState(
  storage: Storage,
  redisSettings: { url?: string; key_prefix: string },
  log: Logger,
): Promise<SharedState> {
  const redis = redisSettings.url ? await connectRedis(redisSettings.url, log) : undefined;
  const cache = redis ? redisCache(redis, redisSettings.key_prefix) : noSharedCache;
  const link = workerLink();
  const bus = createChangeBus(storage, redis, cache, redisSettings.key_prefix, log, link?.relay);
  // One worker (the default) counts in its own memory, as fast as it gets; several count in the
  // primary's, so a limit of 10 is 10 across them. Redis, when configured, counts for every
  // replica, and a worker that loses it falls back to the primary's counts, not its own.
  const windows = link?.windowCounter ?? memoryWindowCounter();
  const failures = link?.failureCounter ?? memoryFailureCounter();
  const deviceCodes = link ? namespacedFailureCounter(link.failureCounter, 'device_codes') : memoryFailureCounter();
  return {
    redis,
    cache,
    bus,
    revocations: new Revocations(bus, cache),
    windowCounter: redis ? redisWindowCounter(redis, redisSettings.key_prefix, windows) : windows,
    failureCounter: redis ? redisFailureCounter(redis, redisSettings.key_prefix, failures) : failures,
    deviceCodeRequests: redis
      ? redisFailureCounter(redis, `${redisSettings.key_prefix}device_codes:`, deviceCodes)
      : deviceCodes,
    checks: link ? [link.readiness] : [],
    async close() {
      await bus.close();
      redis?.disconnect();
    },
  };
}
