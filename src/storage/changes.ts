import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Logger } from '../log.js';
import type { Storage } from './database.js';

/** What other gateway processes must hear about at once, so none keeps honouring it from a cache. */
export type Change = { kind: 'keys_changed' } | { kind: 'user_disabled'; userId: string } | { kind: 'session_ended' };

export interface ChangeBus {
  publish(change: Change): void;
  subscribe(listener: (change: Change) => void): void;
  close(): Promise<void>;
}

const CHANNEL = 'gatehouse_changes';
/** SQLite has no notifications; other processes (the CLI) are caught up with by polling. */
const POLL_INTERVAL_MS = 500;

function parseChange(text: string): Change | undefined {
  try {
    const change = JSON.parse(text) as Change;
    return typeof change?.kind === 'string' ? change : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Picks the fastest channel available: Redis pub/sub when configured, else PostgreSQL
 * LISTEN/NOTIFY, else polling the SQLite file for revocations made by another process.
 */
export function createChangeBus(storage: Storage, redis: Redis | undefined, prefix: string, log: Logger): ChangeBus {
  if (redis) return redisBus(redis, prefix + CHANNEL, log);
  if (storage.kind === 'postgres') return postgresBus(storage, log);
  return sqlitePollingBus(storage);
}

function fanOut() {
  const listeners: Array<(change: Change) => void> = [];
  return {
    subscribe: (listener: (change: Change) => void) => void listeners.push(listener),
    emit: (change: Change) => listeners.forEach((listener) => listener(change)),
  };
}

function redisBus(redis: Redis, channel: string, log: Logger): ChangeBus {
  const { subscribe, emit } = fanOut();
  // A subscribed connection can do nothing else, so it is a second one; it queues the subscription
  // until connected (the main connection fails fast instead) and ioredis re-subscribes on reconnect.
  const subscriber = redis.duplicate({ enableOfflineQueue: true });
  subscriber.on('error', () => undefined);
  void subscriber.subscribe(channel).catch((error: unknown) => log.warn({ err: error }, 'redis subscribe failed'));
  subscriber.on('message', (_channel, message: string) => {
    const change = parseChange(message);
    if (change) emit(change);
  });
  return {
    publish: (change) => {
      emit(change);
      redis.publish(channel, JSON.stringify(change)).catch((error: unknown) => {
        log.warn({ err: error, change }, 'redis publish failed; other instances catch up within 1 s');
      });
    },
    subscribe,
    close: async () => {
      subscriber.disconnect();
    },
  };
}

function postgresBus(storage: Storage, log: Logger): ChangeBus {
  const { subscribe, emit } = fanOut();
  let client: pg.Client | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  const listen = async () => {
    const next = storage.postgres!.dedicatedClient();
    next.on('error', () => undefined);
    next.on('end', () => {
      if (!closed) retry = setTimeout(() => void listen(), 1_000).unref();
    });
    next.on('notification', (message) => {
      const change = message.payload ? parseChange(message.payload) : undefined;
      if (change) emit(change);
    });
    try {
      await next.connect();
      await next.query(`listen ${CHANNEL}`);
      client = next;
    } catch (error) {
      log.warn({ err: error }, 'postgres LISTEN failed; retrying');
      await next.end().catch(() => undefined);
    }
  };
  void listen();
  return {
    publish: (change) => {
      emit(change);
      storage
        .postgres!.pool.query('select pg_notify($1, $2)', [CHANNEL, JSON.stringify(change)])
        .catch((error: unknown) => {
          log.warn({ err: error, change }, 'postgres NOTIFY failed; other instances catch up within 1 s');
        });
    },
    subscribe,
    close: async () => {
      closed = true;
      clearTimeout(retry);
      await client?.end().catch(() => undefined);
    },
  };
}

function sqlitePollingBus(storage: Storage): ChangeBus {
  const { subscribe, emit } = fanOut();
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
        for (const { id } of users) emit({ kind: 'user_disabled', userId: id });
        if (keys.length) emit({ kind: 'keys_changed' });
      })
      .catch(() => undefined);
  }, POLL_INTERVAL_MS).unref();
  return {
    publish: emit,
    subscribe,
    close: async () => clearInterval(timer),
  };
}
