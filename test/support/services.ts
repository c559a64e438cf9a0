import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';

/** The local services CI and every developer box run; each test keeps to its own schema or prefix. */
export const POSTGRES_URL = process.env.GATEHOUSE_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const REDIS_URL = 'redis://127.0.0.1:6379';

/** Set by test/support/global-setup.ts for the whole run; its schemas are dropped when it ends. */
export const TEST_RUN_ENV = 'GATEHOUSE_TEST_RUN';

export function uniqueSchema(): string {
  return `t_${process.env[TEST_RUN_ENV] ?? 'norun'}_${randomBytes(6).toString('hex')}`;
}

export async function withPostgres<T>(use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

export function dropSchema(schema: string): Promise<unknown> {
  return withPostgres((client) => client.query(`drop schema if exists "${schema}" cascade`));
}

export async function deleteRedisKeys(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

/** A row the test holds locked in an open transaction; see holdRow. */
export interface HeldRow {
  /** Resolves once a statement containing `statement` waits for this lock; fails past 10 s. */
  waitedOnBy(statement: string): Promise<void>;
  /** Commits the test's transaction: the statement waiting for the row goes through at once. */
  release(): Promise<void>;
}

/**
 * Locks one row (`select … for update`) until released. A change another process makes to it
 * meanwhile waits inside PostgreSQL and, being one statement, commits the moment the lock goes: the
 * test, not that process's scheduling, decides when the change lands.
 */
export async function holdRow(schema: string, table: string, id: string): Promise<HeldRow> {
  const holder = new pg.Client({ connectionString: POSTGRES_URL });
  await holder.connect();
  await holder.query('begin');
  await holder.query(`select 1 from "${schema}"."${table}" where id = $1 for update`, [id]);
  const { rows } = await holder.query<{ pid: number }>('select pg_backend_pid() as pid');
  const holderPid = rows[0]!.pid;
  return {
    async waitedOnBy(statement) {
      const giveUpAt = Date.now() + 10_000;
      // Another connection: statistics views read in a transaction keep their first snapshot.
      await withPostgres(async (observer) => {
        for (;;) {
          const waiting = await observer.query(
            'select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid)) and query ilike $2',
            [holderPid, `%${statement}%`],
          );
          if (waiting.rowCount) return;
          if (Date.now() > giveUpAt) throw new Error(`no "${statement}" waited for the ${table} row within 10 s`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      });
    },
    async release() {
      try {
        await holder.query('commit');
      } finally {
        await holder.end();
      }
    },
  };
}
