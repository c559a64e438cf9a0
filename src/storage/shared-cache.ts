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
  /** Never fails: a lookup that cannot be made is a miss. */
  get<T>(namespace: CacheNamespace, id: string): Promise<CacheLookup<T>>;
  /** Never fails: an answer that cannot be stored is simply not shared. */
  set(namespace: CacheNamespace, id: string, value: unknown, version: string): Promise<void>;
  /** Never fails, so a change already stored is never reported as failed. */
  invalidate(namespace: CacheNamespace): Promise<void>;
}

/** Long enough to spare the database, short enough that a lost invalidation heals itself. */
const TTL_SECONDS = 60;
/** The version a lookup reports while Redis cannot be used; nothing is stored under it. */
const UNAVAILABLE = 'unavailable';

interface Entry {
  version: string;
  value: unknown;
}

/**
 * Redis as an accelerator: while it cannot be reached every lookup is a miss (the database answers)
 * and every write is skipped, so an outage costs database reads, never a refusal.
 */
export function redisCache(redis: Redis, prefix: string): SharedCache {
  const versionKey = (namespace: CacheNamespace) => `${prefix}${namespace}:version`;
  const entryKey = (namespace: CacheNamespace, id: string) => `${prefix}${namespace}:${id}`;
  const bumpVersions = () => Promise.all([redis.incr(versionKey('key')), redis.incr(versionKey('session'))]);
  // A change made while this process had lost Redis could not bump the versions, so after every
  // (re)connection they are bumped, and no entry is trusted until they are: entries written before
  // an outage are never served after it.
  let trusted = false;
  redis.on('close', () => (trusted = false));
  redis.on('ready', () => {
    void bumpVersions().then(
      () => (trusted = redis.status === 'ready'),
      () => undefined,
    );
  });
  const usable = () => trusted && redis.status === 'ready';
  return {
    async get<T>(namespace: CacheNamespace, id: string): Promise<CacheLookup<T>> {
      if (!usable()) return { hit: false, version: UNAVAILABLE };
      try {
        const [stored, raw] = await redis.mget(versionKey(namespace), entryKey(namespace, id));
        const version = stored ?? '0';
        const entry = raw ? (JSON.parse(raw) as Entry) : undefined;
        return entry?.version === version ? { hit: true, value: entry.value as T, version } : { hit: false, version };
      } catch {
        return { hit: false, version: UNAVAILABLE };
      }
    },
    async set(namespace, id, value, version) {
      if (version === UNAVAILABLE) return;
      await redis
        .set(entryKey(namespace, id), JSON.stringify({ version, value }), 'EX', TTL_SECONDS)
        .catch(() => undefined);
    },
    async invalidate(namespace) {
      try {
        await redis.incr(versionKey(namespace));
      } catch {
        // Not told, Redis may still hold answers this change made stale: stop trusting it until a
        // reconnection has bumped every version. Already disconnected, it reconnects by itself.
        if (trusted && redis.status === 'ready') {
          trusted = false;
          redis.disconnect(true);
        }
      }
    },
  };
}
export const noSharedCache: SharedCache = {
  get: async () => ({ hit: false, version: '0' }),
  set: async () => undefined,
  invalidate: async () => undefined,
};
