import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Logger } from '../log.js';
import type { Storage } from './database.js';
import type { CacheNamespace, SharedCache } from './shared-cache.js';

/** What other gateway processes must hear about at once, so none keeps honouring it from a cache. */
export type Change = { kind: 'keys_changed' } | { kind: 'user_disabled'; userId: string } | { kind: 'session_ended' };

export interface ChangeBus {
  /**
   * Tells this process at once and, over Redis when it is up, every other. The database announces
   * the same change on its own (a PostgreSQL trigger on commit; SQLite is polled every 0.5 s), so a
   * publish lost with Redis costs no correctness.
   */
  publish(change: Change): void;
  subscribe(listener: (change: Change) => void): void;
  close(): Promise<void>;
}

/** Another way changes travel between gateway processes: the workers of one `gatehouse serve`. */
export interface ChangeRelay {
  publish(change: Change): void;
  subscribe(listener: (change: Change) => void): void;
}

const REDIS_CHANNEL = 'gatehouse_changes';
/** SQLite has no notifications: another process on the same file (the CLI, a second gateway) is polled. */
const POLL_INTERVAL_MS = 500;
/** A LISTEN connection the database dropped is opened again after this long. */
const LISTEN_RETRY_MS = 1_000;

/** The shared answers a change makes stale. */
export function staleNamespaces(change: Change): CacheNamespace[] {
  if (change.kind === 'keys_changed') return ['key'];
  if (change.kind === 'session_ended') return ['session'];
  return ['key', 'session'];
}

function parseChange(text: string): Change | undefined {
  try {
    const change = JSON.parse(text) as Change;
    return typeof change?.kind === 'string' ? change : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Listens on every channel available at once: Redis pub/sub (fastest, but only as reliable as the
 * announcing process's link to Redis) and the database's own announcements (PostgreSQL NOTIFY sent
 * by a trigger in the changing transaction, or polling SQLite), which cannot be lost with the change.
 */
export function createChangeBus(
  storage: Storage,
  redis: Redis | undefined,
  cache: SharedCache,
  prefix: string,
  log: Logger,
  relay?: ChangeRelay,
): ChangeBus {
  const listeners: Array<(change: Change) => void> = [];
  const emit = (change: Change) => listeners.forEach((listener) => listener(change));
  // At debug level each notice from elsewhere is recorded with the channel that brought it, when it
  // has been applied: how an operator (or a test) sees which channel carried a change, and when.
  const applyFrom = (channel: 'postgres' | 'sqlite' | 'redis' | 'worker') => (change: Change) => {
    emit(change);
    log.debug({ change: change.kind, channel }, 'change notice applied');
  };
  // The announcing process may have lost Redis and left shared answers valid that are no longer
  // true: they are invalidated from here before this process re-reads anything.
  const fromDatabase = (apply: (change: Change) => void) => (change: Change) =>
    void Promise.all(staleNamespaces(change).map((namespace) => cache.invalidate(namespace))).then(() => apply(change));
  const channels = [
    storage.kind === 'postgres'
      ? listenToPostgres(storage, fromDatabase(applyFrom('postgres')), log)
      : pollSqlite(storage, fromDatabase(applyFrom('sqlite'))),
    ...(redis ? [subscribeToRedis(redis, prefix + REDIS_CHANNEL, applyFrom('redis'), log)] : []),
  ];
  // The other workers hear at once, without waiting for Redis or the database's announcement.
  relay?.subscribe(applyFrom('worker'));
  return {
    publish: (change) => {
      emit(change);
      relay?.publish(change);
      if (redis?.status !== 'ready') return;
      redis.publish(prefix + REDIS_CHANNEL, JSON.stringify(change)).catch((error: unknown) => {
        log.warn({ err: error, change }, 'redis publish failed; the database announces the change');
      });
    },
    subscribe: (listener) => void listeners.push(listener),
    close: async () => {
      await Promise.all(channels.map((close) => close()));
    },
  };
}

function subscribeToRedis(redis: Redis, channel: string, hear: (change: Change) => void, log: Logger) {
  // A subscribed connection can do nothing else, so it is a second one; it queues the subscription
  // until connected (the main connection fails fast instead) and ioredis re-subscribes on reconnect.
  const subscriber = redis.duplicate({ enableOfflineQueue: true, commandTimeout: undefined });
  subscriber.on('error', () => undefined);
  void subscriber.subscribe(channel).catch((error: unknown) => log.warn({ err: error }, 'redis subscribe failed'));
  subscriber.on('message', (_channel, message: string) => {
    const change = parseChange(message);
    if (change) hear(change);
  });
  return async () => subscriber.disconnect();
}

function listenToPostgres(storage: Storage, hear: (change: Change) => void, log: Logger) {
  let client: pg.Client | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  let lost = false;
  const listen = async () => {
    const next = storage.postgres!.dedicatedClient();
    next.on('error', () => undefined);
    next.on('end', () => {
      if (closed) return;
      lost = true;
      retry = setTimeout(() => void listen(), LISTEN_RETRY_MS).unref();
    });
    next.on('notification', (message) => {
      const change = message.payload ? parseChange(message.payload) : undefined;
      if (change) hear(change);
    });
    try {
      await next.connect();
      // The same name the trigger computes from the table's schema (migrations.ts).
      const { rows } = await next.query<{ channel: string }>(
        `select 'gatehouse_changes_' || left(md5(current_schema()), 16) as channel`,
      );
      await next.query(`listen "${rows[0]!.channel}"`);
      client = next;
      // Whatever was announced while not listening is unknown: every answer is treated as stale.
      if (lost) for (const kind of ['keys_changed', 'session_ended'] as const) hear({ kind });
      lost = false;
    } catch (error) {
      log.warn({ err: error }, 'postgres LISTEN failed; retrying');
      await next.end().catch(() => undefined);
    }
  };
  void listen();
  return async () => {
    closed = true;
    clearTimeout(retry);
    await client?.end().catch(() => undefined);
  };
}

function pollSqlite(storage: Storage, hear: (change: Change) => void) {
  let since = Date.now();
  const timer = setInterval(() => {
    const from = since;
    since = Date.now();
    void Promise.all([
      storage.db
        .selectFrom('users')
        .select('id')
        .where('disabled_at', '>=', from - POLL_INTERVAL_MS)
        .execute(),
      storage.db
        .selectFrom('api_keys')
        .select('id')
        .where('revoked_at', '>=', from - POLL_INTERVAL_MS)
        .limit(1)
        .execute(),
    ])
      .then(([users, keys]) => {
        for (const { id } of users) hear({ kind: 'user_disabled', userId: id });
        if (keys.length) hear({ kind: 'keys_changed' });
      })
      .catch(() => undefined);
  }, POLL_INTERVAL_MS).unref();
  return async () => clearInterval(timer);
}
