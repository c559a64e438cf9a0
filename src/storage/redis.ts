import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';

/**
 * Redis only speeds things up (shared lookups, counters, pub/sub); each use falls back to the
 * database or to counting in this process. So that a request is not kept waiting for that
 * fallback, the connection fails fast while Redis is away (no offline queue) and gives up on a
 * command Redis does not answer in time; it reconnects by itself with backoff.
 */
const COMMAND_TIMEOUT_MS = 1_000;

/** ioredis is loaded only when Redis is configured: it adds about 4 MB to every process otherwise. */
export async function connectRedis(url: string, log: Logger): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: COMMAND_TIMEOUT_MS,
    connectTimeout: 2_000,
    retryStrategy: (attempt) => Math.min(100 * 2 ** attempt, 2_000),
    lazyConnect: false,
  });
  let down = false;
  redis.on('error', (error) => {
    if (!down) log.warn({ err: error }, 'redis unavailable; using the database and counting limits per replica');
    down = true;
  });
  redis.on('ready', () => {
    if (down) log.info('redis reachable again');
    down = false;
  });
  return redis;
}
