import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect, sql, type Dialect } from 'kysely';
import type pg from 'pg';
import { GatehouseError } from '../errors.js';
import { migrateToLatest, type DatabaseKind } from './migrations.js';
import { OwnSchemaPostgresDialect } from './own-schema-introspector.js';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;

export interface DatabaseSettings {
  url: string;
  /** PostgreSQL schema for Gatehouse's tables; created when missing. */
  schema?: string;
  pool_size?: number;
  statement_timeout_ms?: number;
  auto_migrate?: boolean;
}

export interface Storage {
  db: Db;
  kind: DatabaseKind;
  /** PostgreSQL only: the pool, and a connection of its own (LISTEN cannot share a pooled one). */
  postgres?: { pool: pg.Pool; dedicatedClient(): pg.Client; migrationDb(): Kysely<unknown> };
  /** Resolves when the database answers a trivial query; for /readyz. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** int8 columns hold epoch milliseconds, well inside the exact range of a JS number. */
const INT8_OID = 20;

/** Opens the database named by `database.url` and, unless told otherwise, applies pending migrations. */
export async function openStorage(settings: DatabaseSettings | string): Promise<Storage> {
  const options = typeof settings === 'string' ? { url: settings } : settings;
  const storage = /^postgres(ql)?:/.test(options.url) ? await openPostgres(options) : openSqliteStorage(options.url);
  if (options.auto_migrate === false) return storage;
  try {
    await migrateStorage(storage, options.schema);
  } catch (error) {
    await storage.close();
    throw error;
  }
  return storage;
}

/**
 * Applies pending migrations and names them. On PostgreSQL they run on a connection of their own
 * without `statement_timeout_ms`: that bound is for the request path, and a migration (building an
 * index on a large table) may take longer.
 */
export async function migrateStorage(storage: Storage, schema: string | undefined): Promise<string[]> {
  if (!storage.postgres) return migrateToLatest(storage.db as Kysely<unknown>, storage.kind);
  const db = storage.postgres.migrationDb();
  try {
    return await migrateToLatest(db, storage.kind, schema);
  } finally {
    await db.destroy();
  }
}

function storageOf(dialect: Dialect, kind: Storage['kind'], extra: Partial<Storage> = {}): Storage {
  const db = new Kysely<Database>({ dialect });
  return {
    db,
    kind,
    ...extra,
    ping: async () => {
      await sql`select 1`.execute(db);
    },
    close: () => db.destroy(),
  };
}

/** pg is loaded only for PostgreSQL: it adds some 70 ms to every start otherwise. */
async function openPostgres(options: DatabaseSettings): Promise<Storage> {
  const { default: pg } = await import('pg');
  const { schema } = options;
  const connection: pg.ClientConfig = {
    connectionString: options.url,
    statement_timeout: options.statement_timeout_ms || undefined,
    connectionTimeoutMillis: 5_000,
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === INT8_OID ? Number : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
    // search_path set at connect time puts every table, and the migrations' own, in the schema.
    ...(schema ? { options: `-c search_path=${schema}` } : {}),
  };
  await prepareDatabase(new pg.Client({ ...connection, options: undefined }), schema);
  const pool = new pg.Pool({ ...connection, max: options.pool_size ?? 10 });
  // A connection the server drops must not crash the process: idle ones report on the pool, and
  // checked-out ones on the client (pg-pool removes its own listener while a client is lent out).
  // The query in flight still fails, and its request is answered 503.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return storageOf(new OwnSchemaPostgresDialect({ pool }), 'postgres', {
    postgres: {
      pool,
      dedicatedClient: () => new pg.Client(connection),
      migrationDb: () =>
        new Kysely<unknown>({
          dialect: new OwnSchemaPostgresDialect({
            pool: new pg.Pool({ ...connection, statement_timeout: undefined, max: 1 }),
          }),
        }),
    },
  });
}

/**
 * Connects once before anything else, so an unreachable server is reported as such, and creates the
 * schema. Replicas starting together may race to create it; losing that race is success.
 */
async function prepareDatabase(client: pg.Client, schema: string | undefined): Promise<void> {
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    throw new GatehouseError('DATABASE_UNAVAILABLE', `cannot reach PostgreSQL: ${(error as Error).message}`, {
      cause: error,
    });
  }
  try {
    if (schema) await client.query(`create schema if not exists "${schema}"`);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== '23505' && code !== '42P06') {
      throw new GatehouseError(
        'DATABASE_SCHEMA_FAILED',
        `cannot create schema ${schema}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

function openSqliteStorage(url: string): Storage {
  if (!url.startsWith('sqlite:')) {
    throw new GatehouseError('DATABASE_URL_INVALID', 'database.url must start with sqlite: or postgres://');
  }
  const location = url.slice('sqlite:'.length);
  const path = location === ':memory:' ? location : resolve(location);
  try {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    const database = new SqliteDatabase(path);
    // WAL lets readers proceed while a write is in flight. better-sqlite3 waits out busy_timeout
    // synchronously, stalling every request, so it is short: a brief lock by a second process (the
    // CLI) is ridden out, a long one answers 503 instead of freezing the gateway.
    database.pragma('journal_mode = WAL');
    database.pragma('busy_timeout = 250');
    database.pragma('foreign_keys = ON');
    return storageOf(new SqliteDialect({ database }), 'sqlite');
  } catch (error) {
    throw new GatehouseError(
      'DATABASE_UNAVAILABLE',
      `cannot open SQLite database ${path}: ${(error as Error).message}`,
      { cause: error },
    );
  }
}
