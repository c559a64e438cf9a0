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
