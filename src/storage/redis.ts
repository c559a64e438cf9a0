import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';

/**
 * A Redis connection that fails fast while Redis is away (no offline queue), so a request that
 * needs it is answered 503 at once instead of hanging, and reconnects by itself with backoff.
 * ioredis is loaded only when Redis is configured: it adds about 4 MB to every process otherwise.
 */
export async function connectRedis(url: string, log: Logger): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    retryStrategy: (attempt) => Math.min(100 * 2 ** attempt, 2_000),
    lazyConnect: false,
  });
  let down = false;
  redis.on('error', (error) => {
    if (!down) log.warn({ err: error }, 'redis unavailable');
    down = true;
  });
  redis.on('ready', () => {
    if (down) log.info('redis reachable again');
    down = false;
  });
  return redis;
}
