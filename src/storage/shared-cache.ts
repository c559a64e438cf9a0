import type { Redis } from 'ioredis';

export type CacheNamespace = 'key' | 'session';

export type CacheLookup<T> = ({ hit: true; value: T } | { hit: false }) & { version: string };

/**
 * Lookups shared by every gateway process through Redis. Each namespace has a version number that
 * any revocation bumps; an entry written under an older version is ignored, so one INCR
 * invalidates every cached answer without knowing which ones were affected. A miss returns the
 * version seen before the database is read, and the answer is stored under that version: an answer
 * read before a revocation can therefore never pass for one read after it.
 */
export interface SharedCache {
  get<T>(namespace: CacheNamespace, id: string): Promise<CacheLookup<T>>;
  set(namespace: CacheNamespace, id: string, value: unknown, version: string): Promise<void>;
  invalidate(namespace: CacheNamespace): Promise<void>;
}

/** Long enough to spare the database, short enough that a lost invalidation heals itself. */
const TTL_SECONDS = 60;

interface Entry {
  version: string;
  value: unknown;
}

export function redisCache(redis: Redis, prefix: string): SharedCache {
  const versionKey = (namespace: CacheNamespace) => `${prefix}${namespace}:version`;
  const entryKey = (namespace: CacheNamespace, id: string) => `${prefix}${namespace}:${id}`;
  // A revocation made while Redis was away could not bump the versions, so every (re)connection
  // bumps them: entries written before the outage are never trusted after it.
  redis.on('ready', () => {
    void redis.incr(versionKey('key')).catch(() => undefined);
    void redis.incr(versionKey('session')).catch(() => undefined);
  });
  return {
    async get<T>(namespace: CacheNamespace, id: string): Promise<CacheLookup<T>> {
      const [stored, raw] = await redis.mget(versionKey(namespace), entryKey(namespace, id));
      const version = stored ?? '0';
      const entry = raw ? (JSON.parse(raw) as Entry) : undefined;
      return entry?.version === version ? { hit: true, value: entry.value as T, version } : { hit: false, version };
    },
    async set(namespace, id, value, version) {
      await redis.set(entryKey(namespace, id), JSON.stringify({ version, value }), 'EX', TTL_SECONDS);
    },
    async invalidate(namespace) {
      await redis.incr(versionKey(namespace));
    },
  };
}

export const noSharedCache: SharedCache = {
  get: async () => ({ hit: false, version: '0' }),
  set: async () => undefined,
  invalidate: async () => undefined,
};
