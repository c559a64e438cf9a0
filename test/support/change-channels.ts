/**
 * Listens, as a test, on the channels gateways announce changes over (PostgreSQL NOTIFY from the
 * database's triggers, Redis pub/sub from the process that made the change), to measure how fast
 * each carried a change and to show which one did.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { POSTGRES_URL, REDIS_URL } from './services.js';

/** What Gatehouse promises (README): a change made on one replica is refused on every other within 1 s. */
export const PROMISED_WITHIN_MS = 1_000;

/** A change notice a gateway applied, as its log records it at debug level. */
export interface AppliedNotice {
  at: number;
  kind: string;
  channel: 'postgres' | 'sqlite' | 'redis' | 'worker';
}

/**
 * The notices of `kind` a gateway logged applying at or after `since` (its log level must be
 * debug): the gateway's own record of which channel brought a change and when it acted on it.
 */
export function appliedNotices(log: string, kind: string, since: number): AppliedNotice[] {
  return log.split('\n').flatMap((line) => {
    if (!line.includes('"change notice applied"')) return [];
    const entry = JSON.parse(line) as { time: number; change: string; channel: AppliedNotice['channel'] };
    return entry.change === kind && entry.time >= since ? [{ at: entry.time, kind, channel: entry.channel }] : [];
  });
}

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
