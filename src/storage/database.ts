import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { ConfigError, GatehouseError } from '../errors.js';
import { migrateToLatest } from './migrations.js';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;

export interface Storage {
  db: Db;
  /** Resolves when the database answers a trivial query; for /readyz. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Opens the database named by `database.url` and applies pending migrations. */
export async function openStorage(url: string): Promise<Storage> {
  const db = new Kysely<Database>({ dialect: createDialect(url) });
  try {
    await migrateToLatest(db as Kysely<unknown>);
  } catch (error) {
    await db.destroy();
    throw error;
  }
  return {
    db,
    ping: async () => {
      await sql`select 1`.execute(db);
    },
    close: () => db.destroy(),
  };
}

function createDialect(url: string) {
  if (url.startsWith('sqlite:')) return new SqliteDialect({ database: openSqlite(url.slice('sqlite:'.length)) });
  if (/^postgres(ql)?:/.test(url)) {
    throw new ConfigError('database.url: PostgreSQL is not supported by this version yet; use sqlite:PATH');
  }
  throw new ConfigError(`database.url must start with sqlite: or postgres://`);
}

function openSqlite(location: string) {
  const path = location === ':memory:' ? location : resolve(location);
  try {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    const database = new SqliteDatabase(path);
    // WAL lets readers proceed while a write is in flight; busy_timeout rides out short locks
    // from a second process (the CLI) instead of failing a request.
    database.pragma('journal_mode = WAL');
    database.pragma('busy_timeout = 5000');
    database.pragma('foreign_keys = ON');
    return database;
  } catch (error) {
    throw new GatehouseError(
      'DATABASE_UNAVAILABLE',
      `cannot open SQLite database ${path}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}
