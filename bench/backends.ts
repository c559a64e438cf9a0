/**
 * The API-key proxy path on each storage backend, side by side in one run: SQLite, PostgreSQL, and
 * PostgreSQL + Redis. Run: npm run bench:backends (BENCH_SECONDS, BENCH_REPEATS). Needs nginx, wrk,
 * PostgreSQL on 127.0.0.1:5432 and Redis on 6379.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { measureRows, printRows } from './lib/gateway-rows.js';

const POSTGRES = process.env.GATEHOUSE_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `bench_${randomBytes(4).toString('hex')}`;
try {
  const results = await measureRows([
    { label: 'SQLite', config: {} },
    { label: 'PostgreSQL', config: { database: { url: POSTGRES, schema } } },
    {
      label: 'PostgreSQL + Redis',
      config: {
        database: { url: POSTGRES, schema },
        redis: { url: 'redis://127.0.0.1:6379', key_prefix: `${schema}:` },
      },
    },
  ]);
  printRows('API key by storage backend', results);
} finally {
  const client = new pg.Client({ connectionString: POSTGRES });
  await client.connect();
  await client.query(`drop schema if exists "${schema}" cascade`);
  await client.end();
}
