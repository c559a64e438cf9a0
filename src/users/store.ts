import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../storage/database.js';

export type Role = 'admin' | 'user';

export interface User {
  id: string;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
  role: Role;
  /** Groups the provider named at the last sign-in. */
  groups: string[];
  disabled: boolean;
}

export interface ProviderIdentity {
  issuer: string;
  subject: string;
  email?: string;
  name?: string;
  role?: Role;
  groups?: string[];
  /** Every claim of the sign-in (ID token and UserInfo), for sign-in hooks: `email_verified`. */
  claims?: Record<string, unknown>;
}

/**
 * Runs once a sign-in is recorded, with the user as stored; may change and return them (src/scim/link.ts
 * links a user the provider pushed over SCIM, and applies its `active` and groups).
 */
export type SignInHook = (user: User, identity: ProviderIdentity) => Promise<User>;

/** Per database, so gateways sharing a process (tests) keep their own. */
const signInHooks = new WeakMap<Db, SignInHook>();

export function setSignInHook(db: Db, hook: SignInHook): void {
  signInHooks.set(db, hook);
}

export interface UserOverview extends User {
  created_at: number;
  last_login_at: number;
  key_count: number;
  active_sessions: number;
  /** When the provider last changed this user over SCIM; null when SCIM does not manage them. */
  scim_updated_at: number | null;
}

/** The columns every User is read from; `disabled_at` becomes a boolean. */
export const USER_COLUMNS = [
  'users.id',
  'users.issuer',
  'users.subject',
  'users.email',
  'users.name',
  'users.role',
  'users.groups',
  'users.disabled_at',
] as const;

export function toUser(row: {
  id: string;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
  role: string;
  groups: string;
  disabled_at: number | null;
}): User {
  const { disabled_at, role, groups, ...rest } = row;
  return {
    ...rest,
    role: role === 'admin' ? 'admin' : 'user',
    groups: JSON.parse(groups) as string[],
    disabled: disabled_at !== null,
  };
}

/**
 * Records a sign-in. A user is keyed by the provider's `iss` + `sub`, never by email: two accounts
 * that share an address at different providers stay two users (OpenID Connect Core 5.7). Role and
 * groups are replaced by what the provider says now, never merged with what it said before.
 */
export async function recordSignIn(db: Db, identity: ProviderIdentity, now = Date.now()): Promise<User> {
  const current = {
    email: identity.email ?? null,
    name: identity.name ?? null,
    role: identity.role ?? 'user',
    groups: JSON.stringify(identity.groups ?? []),
    last_login_at: now,
  };
  const row = await db
    .insertInto('users')
    .values({ id: randomUUID(), issuer: identity.issuer, subject: identity.subject, created_at: now, ...current })
    // A sign-in without an email or name (a scope not granted, UserInfo not asked) keeps the stored one.
    .onConflict((conflict) =>
      conflict.columns(['issuer', 'subject']).doUpdateSet((eb) => ({
        ...current,
        email: eb.fn.coalesce('excluded.email', 'users.email'),
        name: eb.fn.coalesce('excluded.name', 'users.name'),
        // The provider letting them sign in again undoes a disable that only its refusal caused.
        disabled_at: sql<
          number | null
        >`case when users.disabled_reason = ${PROVIDER_REFUSED} then null else users.disabled_at end`,
        disabled_reason: sql<
          string | null
        >`case when users.disabled_reason = ${PROVIDER_REFUSED} then null else users.disabled_reason end`,
      })),
    )
    .returning(['id', 'issuer', 'subject', 'email', 'name', 'role', 'groups', 'disabled_at'])
    .executeTakeFirstOrThrow();
  const hook = signInHooks.get(db);
  return hook ? hook(toUser(row), identity) : toUser(row);
}

/** Users with this email, most recent sign-in first; emails compare without case (RFC 5321 says domains do). */
export async function findUsersByEmail(db: Db, email: string): Promise<User[]> {
  const rows = await db
    .selectFrom('users')
    .select(USER_COLUMNS)
    .where((eb) => eb(eb.fn('lower', ['email']), '=', email.toLowerCase()))
    .orderBy('last_login_at', 'desc')
    .execute();
  return rows.map(toUser);
}

export async function findUser(db: Db, id: string): Promise<User | undefined> {
  const row = await db.selectFrom('users').select(USER_COLUMNS).where('users.id', '=', id).executeTakeFirst();
  return row && toUser(row);
}

/**
 * Disables a user and ends their sessions in one transaction; keys are refused by the verifier from
 * then on. The one write to `sessions` outside its store: it must commit with the disable, so that
 * enabling the user again can never bring back a session that was meant to end.
 */
export async function setUserDisabled(db: Db, id: string, disabled: boolean, now = Date.now()): Promise<boolean> {
  return db.transaction().execute((trx) => setUserDisabledWithin(trx, id, disabled, now));
}

/** `setUserDisabled` inside a transaction the caller holds, so a change elsewhere commits with it (SCIM). */
export async function setUserDisabledWithin(
  trx: Db,
  id: string,
  disabled: boolean,
  now = Date.now(),
): Promise<boolean> {
  const result = await trx
    .updateTable('users')
    .set({ disabled_at: disabled ? now : null, disabled_reason: null })
    .where('id', '=', id)
    .executeTakeFirst();
  if (disabled) await trx.deleteFrom('sessions').where('user_id', '=', id).execute();
  return result.numUpdatedRows > 0n;
}

const PROVIDER_REFUSED = 'provider_refused';

/**
 * Disables a user the provider no longer accepts (it refused their refresh: `invalid_grant`, the
 * user removed there) and ends their sessions, so their keys stop too; unlike an administrator's
 * disable, their next successful sign-in enables them again (`recordSignIn`). False when the user
 * was disabled already.
 */
export async function disableRefusedUser(db: Db, id: string, now = Date.now()): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const result = await trx
      .updateTable('users')
      .set({ disabled_at: now, disabled_reason: PROVIDER_REFUSED })
      .where('id', '=', id)
      .where('disabled_at', 'is', null)
      .executeTakeFirst();
    if (result.numUpdatedRows === 0n) return false;
    await trx.deleteFrom('sessions').where('user_id', '=', id).execute();
    return true;
  });
}

/**
 * One page of users, most recent sign-in first, by (last_login_at, id); `after` is the id of the
 * last user of the previous page. Reads one row more than `limit` to tell whether more follow.
 */
export async function listUsers(
  db: Db,
  page: { limit: number; after?: string },
  now = Date.now(),
): Promise<{ data: UserOverview[]; has_more: boolean }> {
  let query = db.selectFrom('users');
  if (page.after !== undefined) {
    const last = await db.selectFrom('users').select('last_login_at').where('id', '=', page.after).executeTakeFirst();
    if (!last) return { data: [], has_more: false };
    const { after } = page;
    query = query.where((eb) =>
      eb.or([
        eb('users.last_login_at', '<', last.last_login_at),
        eb.and([eb('users.last_login_at', '=', last.last_login_at), eb('users.id', '<', after)]),
      ]),
    );
  }
  const rows = await query
    .select([...USER_COLUMNS, 'users.created_at', 'users.last_login_at'])
    .select((eb) => [
      eb
        .selectFrom('api_keys')
        .select(eb.fn.countAll<number>().as('n'))
        .whereRef('api_keys.user_id', '=', 'users.id')
        .where('api_keys.revoked_at', 'is', null)
        .as('key_count'),
      eb
        .selectFrom('sessions')
        .select(eb.fn.countAll<number>().as('n'))
        .whereRef('sessions.user_id', '=', 'users.id')
        .where('sessions.expires_at', '>', now)
        .as('active_sessions'),
      eb
        .selectFrom('scim_users')
        .select('scim_users.updated_at')
        .whereRef('scim_users.user_id', '=', 'users.id')
        .as('scim_updated_at'),
    ])
    .orderBy('users.last_login_at', 'desc')
    .orderBy('users.id', 'desc')
    .limit(page.limit + 1)
    .execute();
  const users = rows.slice(0, page.limit).map((row) => ({
    ...toUser(row),
    created_at: Number(row.created_at),
    last_login_at: Number(row.last_login_at),
    key_count: Number(row.key_count ?? 0),
    active_sessions: Number(row.active_sessions ?? 0),
    scim_updated_at: row.scim_updated_at === null ? null : Number(row.scim_updated_at),
  }));
  return { data: users, has_more: rows.length > page.limit };
}

/**
 * Replaces a user's role and groups with what the sign-in rules say now (at a refresh), as a
 * sign-in would; the user stays signed in only while those rules still let them in.
 */
export async function updateUserAccess(db: Db, id: string, access: { role: Role; groups: string[] }): Promise<void> {
  await db
    .updateTable('users')
    .set({ role: access.role, groups: JSON.stringify(access.groups) })
    .where('id', '=', id)
    .execute();
}
