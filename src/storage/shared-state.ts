import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
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
  close(): Promise<void>;
}

/** What gateway processes share beyond the database: Redis when configured, change notices always. */
export async function openSharedState(
  storage: Storage,
  redisSettings: { url?: string; key_prefix: string },
  log: Logger,
): Promise<SharedState> {
  const redis = redisSettings.url ? await connectRedis(redisSettings.url, log) : undefined;
  const cache = redis ? redisCache(redis, redisSettings.key_prefix) : noSharedCache;
  const bus = createChangeBus(storage, redis, cache, redisSettings.key_prefix, log);
  return {
    redis,
    cache,
    bus,
    revocations: new Revocations(bus, cache),
    async close() {
      await bus.close();
      redis?.disconnect();
    },
  };
}
