import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from 'kysely';
import { GatehouseError } from '../errors.js';

export type DatabaseKind = 'sqlite' | 'postgres';

/** The migrations every database gets. */
const migrations: Record<string, Migration> = {
  '001_users_sessions_login_flows': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('issuer', 'text', (c) => c.notNull())
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('email', 'text')
        .addColumn('name', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('last_login_at', 'bigint', (c) => c.notNull())
        .addUniqueConstraint('users_issuer_subject', ['issuer', 'subject'])
        .execute();
      await db.schema
        .createTable('sessions')
        .addColumn('id_hash', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('id_token', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('last_seen_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('sessions_user_id').on('sessions').column('user_id').execute();
      await db.schema
        .createTable('login_flows')
        .addColumn('id_hash', 'text', (c) => c.primaryKey())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('nonce', 'text', (c) => c.notNull())
        .addColumn('code_verifier', 'text', (c) => c.notNull())
        .addColumn('return_to', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
  '002_api_keys': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('api_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('owner_subject', 'text', (c) => c.notNull())
        .addColumn('owner_email', 'text')
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull().unique())
        .addColumn('stub', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint')
        .addColumn('last_used_at', 'bigint')
        .addColumn('revoked_at', 'bigint')
        .execute();
      await db.schema.createIndex('api_keys_user_id').on('api_keys').column('user_id').execute();
    },
  },
  '003_roles_disabled_users_audit': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable('users')
        .addColumn('role', 'text', (c) => c.notNull().defaultTo('user'))
        .execute();
      await db.schema
        .alterTable('users')
        .addColumn('groups', 'text', (c) => c.notNull().defaultTo('[]'))
        .execute();
      await db.schema.alterTable('users').addColumn('disabled_at', 'bigint').execute();
      await db.schema.createIndex('users_email').on('users').column('email').execute();
      await db.schema
        .createTable('audit_events')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('actor_user_id', 'text')
        .addColumn('actor_email', 'text')
        .addColumn('target', 'text')
        .addColumn('client_address', 'text')
        .addColumn('user_agent', 'text')
        .addColumn('detail', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();
      await db.schema.createIndex('audit_events_at').on('audit_events').column('at').execute();
    },
  },
  '004_session_refresh_and_backchannel_logout': {
    async up(db: Kysely<unknown>) {
      // One column per statement: SQLite's ALTER TABLE adds a single column at a time.
      await db.schema.alterTable('sessions').addColumn('refresh_token', 'text').execute();
      await db.schema
        .alterTable('sessions')
        .addColumn('refresh_token_version', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.alterTable('sessions').addColumn('refresh_claimed_at', 'bigint').execute();
      await db.schema.alterTable('sessions').addColumn('id_token_expires_at', 'bigint').execute();
      await db.schema.alterTable('sessions').addColumn('sid', 'text').execute();
      await db.schema.createIndex('sessions_sid').on('sessions').column('sid').execute();
      await db.schema
        .createTable('used_logout_tokens')
        .addColumn('jti_hash', 'text', (c) => c.primaryKey())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
  '005_key_controls_and_usage': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable('api_keys')
        .addColumn('scopes', 'text', (c) => c.notNull().defaultTo('["all"]'))
        .execute();
      await db.schema.alterTable('api_keys').addColumn('models', 'text').execute();
      await db.schema.alterTable('api_keys').addColumn('requests_per_minute', 'integer').execute();
      await db.schema.alterTable('api_keys').addColumn('tokens_per_minute', 'integer').execute();
      await db.schema
        .createTable('usage_daily')
        .addColumn('day', 'text', (c) => c.notNull())
        .addColumn('user_id', 'text', (c) => c.notNull())
        .addColumn('key_id', 'text', (c) => c.notNull())
        .addColumn('requests', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('prompt_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('completion_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('status_2xx', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('status_4xx', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('status_5xx', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('latency_ms_total', 'bigint', (c) => c.notNull().defaultTo(0))
        .addPrimaryKeyConstraint('usage_daily_pk', ['day', 'user_id', 'key_id'])
        .execute();
    },
  },
  '007_api_key_replacement': {
    async up(db: Kysely<unknown>) {
      // Set when a key is rotated, so it cannot be rotated again into a replacement that dies with it.
      await db.schema.alterTable('api_keys').addColumn('replaced_by', 'text').execute();
    },
  },
  '008_login_flow_provider': {
    async up(db: Kysely<unknown>) {
      // Which provider a sign-in was started with: its callback must be that provider's. Flows
      // pending during the upgrade were started with the single provider, whose id is `default`.
      await db.schema
        .alterTable('login_flows')
        .addColumn('provider', 'text', (c) => c.notNull().defaultTo('default'))
        .execute();
    },
  },
  '009_device_authorizations': {
    async up(db: Kysely<unknown>) {
      // RFC 8628 sign-ins in progress; src/device/store.ts owns the table. Codes are stored hashed.
      await db.schema
        .createTable('device_authorizations')
        .addColumn('device_code_hash', 'text', (c) => c.primaryKey())
        .addColumn('user_code_hash', 'text', (c) => c.notNull().unique())
        .addColumn('client_id', 'text', (c) => c.notNull())
        .addColumn('device_name', 'text')
        .addColumn('scopes', 'text', (c) => c.notNull())
        .addColumn('client_address', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('interval_seconds', 'integer', (c) => c.notNull())
        .addColumn('last_polled_at', 'bigint')
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('user_id', 'text')
        .addColumn('key_id', 'text')
        .addColumn('sealed_key', 'text')
        .execute();
      await db.schema
        .createIndex('device_authorizations_expires_at')
        .on('device_authorizations')
        .column('expires_at')
        .execute();
    },
  },
  '010_scim': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('scim_users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        // Deleting a Gatehouse user (never done today) leaves the provider's record unlinked, not gone.
        .addColumn('user_id', 'text', (c) => c.unique().references('users.id').onDelete('set null'))
        .addColumn('user_name', 'text', (c) => c.notNull())
        .addColumn('user_name_lower', 'text', (c) => c.notNull().unique())
        .addColumn('external_id', 'text')
        .addColumn('active', 'integer', (c) => c.notNull())
        .addColumn('resource', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('scim_users_external_id').on('scim_users').column('external_id').execute();
      await db.schema
        .createTable('scim_groups')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('display_name', 'text', (c) => c.notNull())
        .addColumn('external_id', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('scim_members')
        .addColumn('group_id', 'text', (c) => c.notNull().references('scim_groups.id').onDelete('cascade'))
        .addColumn('scim_user_id', 'text', (c) => c.notNull().references('scim_users.id').onDelete('cascade'))
        .addPrimaryKeyConstraint('scim_members_pk', ['group_id', 'scim_user_id'])
        .execute();
      await db.schema.createIndex('scim_members_user').on('scim_members').column('scim_user_id').execute();
      await db.schema.alterTable('users').addColumn('disabled_reason', 'text').execute();
    },
  },
  '011_budgets': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable('usage_daily')
        .addColumn('cost_micros', 'bigint', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .createTable('budget_overrides')
        .addColumn('user_id', 'text', (c) => c.primaryKey().references('users.id').onDelete('cascade'))
        .addColumn('tokens', 'bigint')
        .addColumn('spend_micros', 'bigint')
        .addColumn('period', 'text', (c) => c.notNull())
        .addColumn('set_by', 'text')
        .addColumn('set_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('key_budgets')
        .addColumn('key_id', 'text', (c) => c.primaryKey().references('api_keys.id').onDelete('cascade'))
        .addColumn('user_id', 'text', (c) => c.notNull())
        .addColumn('tokens', 'bigint')
        .addColumn('spend_micros', 'bigint')
        .addColumn('period', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('budget_counters')
        .addColumn('counter', 'text', (c) => c.primaryKey())
        .addColumn('tokens', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('micros', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('ends_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('budget_reservations')
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('counter', 'text', (c) => c.notNull())
        .addColumn('tokens', 'bigint', (c) => c.notNull())
        .addColumn('micros', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('budget_reservations_pk', ['counter', 'id'])
        .execute();
    },
  },
};

/**
 * PostgreSQL announces every revocation, disabled user and ended session from a trigger, so the
 * change and its announcement share one transaction: NOTIFY is delivered on commit and never
 * without it, whichever process or tool made the change (a replica without Redis, `gatehouse keys
 * revoke`, an operator's UPDATE). The channel is named after the schema, so deployments sharing a
 * database do not hear each other; `changeChannel` in changes.ts computes the same name. Identical
 * notices within one transaction are delivered once, so ending many sessions announces one change.
 */
async function announceChangesFromTriggers(db: Kysely<unknown>): Promise<void> {
  await sql`
    create or replace function gatehouse_announce_change() returns trigger language plpgsql as $$
    declare
      change json;
    begin
      -- Nested, not joined with AND: PL/pgSQL may evaluate both sides, and only users have disabled_at.
      change := json_build_object('kind', 'keys_changed');
      if tg_table_name = 'sessions' then
        change := json_build_object('kind', 'session_ended');
      elsif tg_table_name = 'users' then
        if new.disabled_at is not null then
          change := json_build_object('kind', 'user_disabled', 'userId', new.id);
        end if;
      end if;
      perform pg_notify('gatehouse_changes_' || left(md5(tg_table_schema), 16), change::text);
      return null;
    end $$`.execute(db);
  await sql`
    create trigger gatehouse_announce_key_change after update of revoked_at, expires_at on api_keys for each row
    when (old.revoked_at is distinct from new.revoked_at or old.expires_at is distinct from new.expires_at)
    execute function gatehouse_announce_change()`.execute(db);
  // Enabling a user is announced too: cached "account disabled" answers must go.
  await sql`
    create trigger gatehouse_announce_user_change after update of disabled_at on users for each row
    when (old.disabled_at is distinct from new.disabled_at)
    execute function gatehouse_announce_change()`.execute(db);
  await sql`
    create trigger gatehouse_announce_session_end after delete on sessions for each row
    execute function gatehouse_announce_change()`.execute(db);
}

/** Migrations live in code so a compiled package carries them; names sort in the order they apply. */
function migrationsFor(kind: DatabaseKind): Record<string, Migration> {
  return {
    ...migrations,
    '006_announce_changes': {
      // SQLite has no notifications: other processes on the file poll it (see changes.ts).
      up: async (db: Kysely<unknown>) => (kind === 'postgres' ? announceChangesFromTriggers(db) : undefined),
    },
  };
}

function migratorFor(db: Kysely<unknown>, kind: DatabaseKind, schema?: string): Migrator {
  const provider: MigrationProvider = { getMigrations: async () => migrationsFor(kind) };
  return new Migrator({
    db,
    provider,
    // Kysely looks for its bookkeeping tables in `public` unless told the schema search_path points at.
    ...(schema ? { migrationTableSchema: schema } : {}),
    migrationTableName: 'gatehouse_migrations',
    migrationLockTableName: 'gatehouse_migrations_lock',
  });
}

/** Names of migrations not yet applied, for `gatehouse doctor`. */
export async function pendingMigrations(db: Kysely<unknown>, schema?: string): Promise<string[]> {
  // Names are the same for either kind of database.
  const all = await migratorFor(db, 'sqlite', schema).getMigrations();
  return all.filter((migration) => migration.executedAt === undefined).map((migration) => migration.name);
}

/**
 * Brings the schema up to date, or only up to the migration named `upTo` (an upgrade test starts
 * from an older schema); safe to call on every start. On PostgreSQL, Kysely holds an advisory lock
 * while migrating, so replicas starting together do not migrate twice.
 */
export async function migrateToLatest(
  db: Kysely<unknown>,
  kind: DatabaseKind,
  schema?: string,
  upTo?: string,
): Promise<string[]> {
  const migrator = migratorFor(db, kind, schema);
  const { error, results } = await (upTo ? migrator.migrateTo(upTo) : migrator.migrateToLatest());
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new GatehouseError('MIGRATION_FAILED', `database migration ${failed} failed: ${String(error)}`, {
      cause: error,
    });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
