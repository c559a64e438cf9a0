/**
 * Listens, as a test, on the channels gateways announce changes over (PostgreSQL NOTIFY from the
 * database's triggers, Redis pub/sub from the process that made the change), to measure how fast
 * each carried a change and to show which one did.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { KEY_CACHE_FRESH_MS } from '../../src/keys/verify.js';
import { SESSION_CACHE_MS } from '../../src/sessions/store.js';
import { POSTGRES_URL, REDIS_URL } from './services.js';

/** What Gatehouse promises (README): a change made on one replica is refused on every other within 1 s. */
export const PROMISED_WITHIN_MS = 1_000;
/** Scheduling slack on a loaded machine (two cores shared with other test runs). */
export const ANNOUNCEMENT_SLACK_MS = 200;
/**
 * Without an announcement a replica serves its cached answer until it is KEY_CACHE_FRESH_MS
 * (keys) or SESSION_CACHE_MS (sessions) old: a refusal sooner than the shorter of the two, less
 * the slack, can only come from the announcement.
 */
export const ANNOUNCED_WITHIN_MS = Math.min(KEY_CACHE_FRESH_MS, SESSION_CACHE_MS) - ANNOUNCEMENT_SLACK_MS;

export interface HeardChange {
  channel: 'postgres' | 'redis';
  change: { kind: string; userId?: string };
  at: number;
}

export interface ChangeChannels {
  heard: HeardChange[];
  /** The first change of `kind` heard on `channel` at or after `since`. */
  first(channel: HeardChange['channel'], kind: string, since: number): HeardChange | undefined;
  close(): Promise<void>;
}

/** The channel the trigger of migration 006 notifies for tables in `schema`. */
export function postgresChannel(schema: string): string {
  return `gatehouse_changes_${createHash('md5').update(schema).digest('hex').slice(0, 16)}`;
}

export async function listenForChanges(schema: string, redisPrefix?: string): Promise<ChangeChannels> {
  const heard: HeardChange[] = [];
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  client.on('notification', (message) =>
    heard.push({ channel: 'postgres', change: JSON.parse(message.payload!) as HeardChange['change'], at: Date.now() }),
  );
  await client.query(`listen "${postgresChannel(schema)}"`);
  let subscriber: Redis | undefined;
  if (redisPrefix !== undefined) {
    subscriber = new Redis(REDIS_URL);
    subscriber.on('message', (_channel, message: string) =>
      heard.push({ channel: 'redis', change: JSON.parse(message) as HeardChange['change'], at: Date.now() }),
    );
    await subscriber.subscribe(`${redisPrefix}gatehouse_changes`);
  }
  return {
    heard,
    first: (channel, kind, since) =>
      heard.find((entry) => entry.channel === channel && entry.change.kind === kind && entry.at >= since),
    async close() {
      subscriber?.disconnect();
      await client.end();
    },
  };
}
