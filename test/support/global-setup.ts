import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { POSTGRES_URL, TEST_RUN_ENV } from './services.js';

/**
 * Names this run, so the schemas its tests create in PostgreSQL (`t_<run>_…`) can be dropped when
 * it ends: stacks are closed, not dropped, and the test database would otherwise grow run after run.
 */
export default function setup(): () => Promise<void> {
  const run = (process.env[TEST_RUN_ENV] ??= randomBytes(3).toString('hex'));
  return async () => {
    const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2_000 });
    try {
      await client.connect();
      const { rows } = await client.query<{ name: string }>(
        'select nspname as name from pg_namespace where nspname like $1',
        [`t\\_${run}\\_%`],
      );
      for (const { name } of rows) await client.query(`drop schema if exists "${name}" cascade`);
    } catch {
      // No PostgreSQL on this box: there is nothing of ours to drop.
    } finally {
      await client.end().catch(() => undefined);
    }
  };
}
