import { randomUUID } from 'node:crypto';
import { isAdminEmail } from '../policy/email.js';
import { isInAnyGroup } from '../policy/groups.js';
import type { Db } from '../storage/database.js';
import { findUser, setUserDisabledWithin, updateUserAccess, type Role } from '../users/store.js';
import { ScimError, invalid } from './errors.js';
import type { Equality } from './filter.js';
import { applyGroupPatch, applyUserPatch, type PatchOperation } from './patch.js';
import { toUserResource, type GroupInput, type UserResource } from './resources.js';

/** The sign-in rules SCIM group membership feeds, as `auth.*` configures them. */
export interface AccessRules {
  adminGroups: readonly string[];
  adminEmails: readonly string[];
  allowedGroups: readonly string[];
  /**
   * `auth.allow_unverified_email`: when false, a stored email passed the provider's verification
   * at sign-in, so a user may be linked by it (and made admin by `admin_emails`) outside a sign-in.
   */
  allowUnverifiedEmail: boolean;
}

export interface ScimUser {
  id: string;
  userId: string | null;
  resource: UserResource;
  created: number;
  lastModified: number;
  version: number;
}

export interface ScimGroup {
  id: string;
  displayName: string;
  externalId: string | null;
  members: { value: string; display: string }[];
  created: number;
  lastModified: number;
  version: number;
}

/** What an operation did to Gatehouse users, for the caller to announce to every replica and audit. */
export interface Effects {
  /** Gatehouse users disabled (sessions ended in the same transaction). */
  disabled: string[];
  enabled: string[];
  /** Users whose role or groups changed. */
  accessChanged: string[];
  /** Users no longer in any of `auth.allowed_groups`: their sessions ended. */
  excluded: string[];
}

export interface Page<T> {
  total: number;
  items: T[];
}

const noEffects = (): Effects => ({ disabled: [], enabled: [], accessChanged: [], excluded: [] });

/** Two writers met on one resource; the operation is run again on what the other wrote. */
class VersionConflict extends Error {}
const ATTEMPTS = 3;

const notFound = (kind: string, id: string) => new ScimError(404, undefined, `No ${kind} with id ${id.slice(0, 100)}.`);

/**
 * The SCIM tables (scim_users, scim_groups, scim_members). Every operation is one transaction that
 * also makes its consequences for the linked Gatehouse user (disabled, enabled, role and groups), so
 * a refused operation leaves nothing half-applied, and a deactivation can never be stored without
 * the sessions it ends.
 */
export class ScimStore {
  constructor(
    private readonly db: Db,
    private readonly rules: AccessRules,
  ) {}

  private async write<T>(
    operation: (trx: Db, effects: Effects) => Promise<T>,
  ): Promise<{ result: T; effects: Effects }> {
    for (let attempt = 1; ; attempt++) {
      const effects = noEffects();
      try {
        const result = await this.db.transaction().execute((trx) => operation(trx, effects));
        return { result, effects };
      } catch (error) {
        if (isUniqueViolation(error)) {
          // Two creates of one userName raced past the check; the loser is told as if it had lost the check.
          throw new ScimError(409, 'uniqueness', 'A resource with these unique attributes exists already.');
        }
        if (!(error instanceof VersionConflict) || attempt === ATTEMPTS) {
          if (error instanceof VersionConflict)
            throw new ScimError(409, undefined, 'The resource changed meanwhile; retry.');
          throw error;
        }
      }
    }
  }

  async createUser(resource: UserResource, now = Date.now()) {
    return this.write(async (trx, effects) => {
      await this.assertUserNameFree(trx, resource.userName);
      const userId = await this.linkableUser(trx, resource);
      const id = randomUUID();
      await trx
        .insertInto('scim_users')
        .values({ id, user_id: userId ?? null, ...columnsOf(resource), created_at: now, updated_at: now, version: 1 })
        .execute();
      if (userId) await this.applyState(trx, userId, resource.active, effects, now);
      return (await this.readUser(trx, id))!;
    });
  }

  async replaceUser(id: string, resource: UserResource, now = Date.now()) {
    return this.write((trx, effects) => this.storeUser(trx, id, () => resource, effects, now));
  }

  async patchUser(id: string, operations: readonly PatchOperation[], now = Date.now()) {
    return this.write((trx, effects) =>
      this.storeUser(
        trx,
        id,
        (current) => toUserResource(applyUserPatch(current as unknown as Record<string, unknown>, operations)),
        effects,
        now,
      ),
    );
  }

  /** RFC 7644 3.6: the resource is gone; its Gatehouse user stays, disabled, so keys and sign-in stay refused. */
  async deleteUser(id: string, now = Date.now()) {
    return this.write(async (trx, effects) => {
      const current = await this.readUser(trx, id);
      if (!current) throw notFound('User', id);
      await trx.deleteFrom('scim_users').where('id', '=', id).execute();
      if (current.userId) await this.applyState(trx, current.userId, false, effects, now);
      return current;
    });
  }

  getUser(id: string): Promise<ScimUser | undefined> {
    return this.readUser(this.db, id);
  }

  async listUsers(filter: Equality[], startIndex: number, count: number): Promise<Page<ScimUser>> {
    let query = this.db.selectFrom('scim_users');
    for (const { attribute, value } of filter) {
      if (attribute === 'userName') query = query.where('user_name_lower', '=', value.toLowerCase());
      else if (attribute === 'externalId') query = query.where('external_id', '=', value);
      else query = query.where('id', '=', value);
    }
    const total = await query.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    const rows = await query
      .selectAll()
      .orderBy('created_at')
      .orderBy('id')
      .offset(startIndex - 1)
      .limit(count)
      .execute();
    return { total: Number(total.n), items: rows.map(toScimUser) };
  }

  async createGroup(input: GroupInput, now = Date.now()) {
    return this.write(async (trx, effects) => {
      const id = randomUUID();
      await trx
        .insertInto('scim_groups')
        .values({
          id,
          display_name: input.displayName,
          external_id: input.externalId,
          created_at: now,
          updated_at: now,
          version: 1,
        })
        .execute();
      const members = input.members ?? [];
      await this.addMembers(trx, id, members);
      await this.refreshAccess(trx, members, effects);
      return (await this.readGroup(trx, id))!;
    });
  }

  async replaceGroup(id: string, input: GroupInput, now = Date.now()) {
    return this.write((trx, effects) =>
      this.storeGroup(
        trx,
        id,
        (current) => ({
          displayName: input.displayName,
          externalId: input.externalId,
          members: input.members ? new Set(input.members) : current.members,
        }),
        effects,
        now,
      ),
    );
  }

  async patchGroup(id: string, operations: readonly PatchOperation[], now = Date.now()) {
    return this.write((trx, effects) =>
      this.storeGroup(trx, id, (current) => applyGroupPatch(current, operations), effects, now),
    );
  }

  async deleteGroup(id: string) {
    return this.write(async (trx, effects) => {
      const current = await this.readGroup(trx, id);
      if (!current) throw notFound('Group', id);
      await trx.deleteFrom('scim_groups').where('id', '=', id).execute();
      await this.refreshAccess(
        trx,
        current.members.map((member) => member.value),
        effects,
      );
      return current;
    });
  }

  getGroup(id: string): Promise<ScimGroup | undefined> {
    return this.readGroup(this.db, id);
  }

  async listGroups(filter: Equality[], startIndex: number, count: number): Promise<Page<ScimGroup>> {
    let query = this.db.selectFrom('scim_groups');
    for (const { attribute, value } of filter) {
      if (attribute === 'displayName')
        query = query.where((eb) => eb(eb.fn('lower', ['display_name']), '=', value.toLowerCase()));
      else if (attribute === 'externalId') query = query.where('external_id', '=', value);
      else query = query.where('id', '=', value);
    }
    const total = await query.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    const rows = await query
      .select('id')
      .orderBy('created_at')
      .orderBy('id')
      .offset(startIndex - 1)
      .limit(count)
      .execute();
    const groups = await Promise.all(rows.map((row) => this.readGroup(this.db, row.id)));
    return { total: Number(total.n), items: groups.filter((group) => group !== undefined) };
  }

  /**
   * At sign-in (src/scim/link.ts): links the user the provider pushed whose userName or externalId
   * is `verifiedEmail`, unless it is linked already, and applies its `active` and groups.
   */
  async linkAtSignIn(userId: string, verifiedEmail: string | undefined, now = Date.now()): Promise<Effects> {
    const { effects } = await this.write(async (trx, effects) => {
      let linked = await trx
        .selectFrom('scim_users')
        .select(['id', 'active'])
        .where('user_id', '=', userId)
        .executeTakeFirst();
      if (!linked && verifiedEmail) {
        const email = verifiedEmail.toLowerCase();
        linked = await trx
          .selectFrom('scim_users')
          .select(['id', 'active'])
          .where('user_id', 'is', null)
          .where((eb) => eb.or([eb('user_name_lower', '=', email), eb(eb.fn('lower', ['external_id']), '=', email)]))
          .orderBy('created_at')
          .executeTakeFirst();
        if (linked) await trx.updateTable('scim_users').set({ user_id: userId }).where('id', '=', linked.id).execute();
      }
      if (!linked) return;
      await this.applyState(trx, userId, linked.active === 1, effects, now);
      if (await this.groupsPushed(trx)) await this.refreshAccess(trx, [linked.id], effects);
    });
    return effects;
  }

  /** Role and groups from SCIM for a linked user, when the provider pushes groups; else undefined. */
  async provisionedAccess(userId: string): Promise<{ role: Role; groups: string[] } | undefined> {
    const linked = await this.db.selectFrom('scim_users').select('id').where('user_id', '=', userId).executeTakeFirst();
    if (!linked || !(await this.groupsPushed(this.db))) return undefined;
    const user = await findUser(this.db, userId);
    return user && this.accessOf(await this.groupNamesOf(this.db, linked.id), user.email);
  }

  private async storeUser(
    trx: Db,
    id: string,
    next: (current: UserResource) => UserResource,
    effects: Effects,
    now: number,
  ): Promise<ScimUser> {
    const current = await this.readUser(trx, id);
    if (!current) throw notFound('User', id);
    const resource = next(current.resource);
    if (resource.userName.toLowerCase() !== current.resource.userName.toLowerCase()) {
      await this.assertUserNameFree(trx, resource.userName);
    }
    const updated = await trx
      .updateTable('scim_users')
      .set({ ...columnsOf(resource), updated_at: now, version: current.version + 1 })
      .where('id', '=', id)
      .where('version', '=', current.version)
      .executeTakeFirst();
    if (updated.numUpdatedRows === 0n) throw new VersionConflict();
    if (current.userId && resource.active !== current.resource.active) {
      await this.applyState(trx, current.userId, resource.active, effects, now);
    }
    return (await this.readUser(trx, id))!;
  }

  private async storeGroup(
    trx: Db,
    id: string,
    next: (current: { displayName: string; externalId: string | null; members: Set<string> }) => {
      displayName: string;
      externalId: string | null;
      members: Set<string>;
    },
    effects: Effects,
    now: number,
  ): Promise<ScimGroup> {
    const current = await this.readGroup(trx, id);
    if (!current) throw notFound('Group', id);
    const before = new Set(current.members.map((member) => member.value));
    const state = next({ displayName: current.displayName, externalId: current.externalId, members: before });
    const updated = await trx
      .updateTable('scim_groups')
      .set({
        display_name: state.displayName,
        external_id: state.externalId,
        updated_at: now,
        version: current.version + 1,
      })
      .where('id', '=', id)
      .where('version', '=', current.version)
      .executeTakeFirst();
    if (updated.numUpdatedRows === 0n) throw new VersionConflict();
    const added = [...state.members].filter((member) => !before.has(member));
    const removed = [...before].filter((member) => !state.members.has(member));
    if (removed.length) {
      await trx.deleteFrom('scim_members').where('group_id', '=', id).where('scim_user_id', 'in', removed).execute();
    }
    await this.addMembers(trx, id, added);
    // A rename changes every member's groups; otherwise only those who came or went.
    const affected = state.displayName === current.displayName ? [...added, ...removed] : [...before, ...added];
    await this.refreshAccess(trx, affected, effects);
    return (await this.readGroup(trx, id))!;
  }

  private async addMembers(trx: Db, groupId: string, members: readonly string[]): Promise<void> {
    if (members.length === 0) return;
    const known = await trx.selectFrom('scim_users').select('id').where('id', 'in', members).execute();
    const missing = members.find((member) => !known.some((row) => row.id === member));
    if (missing !== undefined)
      throw invalid('invalidValue', `No User with id ${missing.slice(0, 100)} to make a member.`);
    await trx
      .insertInto('scim_members')
      .values(members.map((member) => ({ group_id: groupId, scim_user_id: member })))
      .execute();
  }

  /** Disables or enables the linked Gatehouse user; enabling brings back no session (they were deleted). */
  private async applyState(trx: Db, userId: string, active: boolean, effects: Effects, now: number): Promise<void> {
    const user = await trx.selectFrom('users').select('disabled_at').where('id', '=', userId).executeTakeFirst();
    if (!user || (user.disabled_at === null) === active) return;
    await setUserDisabledWithin(trx, userId, !active, now);
    (active ? effects.enabled : effects.disabled).push(userId);
  }

  /**
   * Gives the linked users among `scimUserIds` the role and groups their SCIM groups give them, the
   * same rules as a groups claim: `auth.admin_groups` makes an admin, and leaving every
   * `auth.allowed_groups` ends their sessions (as a refresh would refuse them).
   */
  private async refreshAccess(trx: Db, scimUserIds: readonly string[], effects: Effects): Promise<void> {
    if (scimUserIds.length === 0) return;
    const linked = await trx
      .selectFrom('scim_users')
      .innerJoin('users', 'users.id', 'scim_users.user_id')
      .select(['scim_users.id as scimId', 'users.id as userId', 'users.email', 'users.role', 'users.groups'])
      .where('scim_users.id', 'in', [...new Set(scimUserIds)])
      .execute();
    for (const row of linked) {
      const access = this.accessOf(await this.groupNamesOf(trx, row.scimId), row.email);
      if (access.role !== row.role || JSON.stringify(access.groups) !== row.groups) {
        await updateUserAccess(trx, row.userId, access);
        effects.accessChanged.push(row.userId);
      }
      if (this.rules.allowedGroups.length > 0 && !isInAnyGroup(access.groups, this.rules.allowedGroups)) {
        const ended = await trx.deleteFrom('sessions').where('user_id', '=', row.userId).executeTakeFirst();
        if (ended.numDeletedRows > 0n) effects.excluded.push(row.userId);
      }
    }
  }

  private accessOf(groups: string[], email: string | null): { role: Role; groups: string[] } {
    const byEmail = !this.rules.allowUnverifiedEmail && isAdminEmail(email ?? undefined, this.rules.adminEmails);
    const admin = byEmail || isInAnyGroup(groups, this.rules.adminGroups);
    return { role: admin ? 'admin' : 'user', groups };
  }

  private async groupNamesOf(trx: Db, scimUserId: string): Promise<string[]> {
    const rows = await trx
      .selectFrom('scim_members')
      .innerJoin('scim_groups', 'scim_groups.id', 'scim_members.group_id')
      .select('scim_groups.display_name')
      .where('scim_members.scim_user_id', '=', scimUserId)
      .orderBy('scim_groups.display_name')
      .execute();
    return [...new Set(rows.map((row) => row.display_name))];
  }

  /** Whether the provider pushes groups at all; if not, groups keep coming from the groups claim. */
  private async groupsPushed(trx: Db): Promise<boolean> {
    return (await trx.selectFrom('scim_groups').select('id').limit(1).executeTakeFirst()) !== undefined;
  }

  private async assertUserNameFree(trx: Db, userName: string): Promise<void> {
    const taken = await trx
      .selectFrom('scim_users')
      .select('id')
      .where('user_name_lower', '=', userName.toLowerCase())
      .executeTakeFirst();
    if (taken) throw new ScimError(409, 'uniqueness', `A User with userName ${userName.slice(0, 256)} exists already.`);
  }

  /**
   * A Gatehouse user who signed in before the provider pushed them: matched by the stored email,
   * only where that email was verified at sign-in (`auth.allow_unverified_email` false), and only
   * when exactly one unlinked user has it; otherwise the link waits for their next sign-in.
   */
  private async linkableUser(trx: Db, resource: UserResource): Promise<string | undefined> {
    if (this.rules.allowUnverifiedEmail) return undefined;
    const names = [resource.userName, resource.externalId]
      .filter((name) => name !== undefined)
      .map((n) => n.toLowerCase());
    const rows = await trx
      .selectFrom('users')
      .select('users.id')
      .where((eb) => eb(eb.fn('lower', ['users.email']), 'in', names))
      .where((eb) =>
        eb.not(
          eb.exists(
            eb.selectFrom('scim_users').select('scim_users.id').whereRef('scim_users.user_id', '=', 'users.id'),
          ),
        ),
      )
      .limit(2)
      .execute();
    return rows.length === 1 ? rows[0]!.id : undefined;
  }

  private async readUser(db: Db, id: string): Promise<ScimUser | undefined> {
    const row = await db.selectFrom('scim_users').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toScimUser(row);
  }

  private async readGroup(db: Db, id: string): Promise<ScimGroup | undefined> {
    const row = await db.selectFrom('scim_groups').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) return undefined;
    const members = await db
      .selectFrom('scim_members')
      .innerJoin('scim_users', 'scim_users.id', 'scim_members.scim_user_id')
      .select(['scim_users.id', 'scim_users.user_name'])
      .where('scim_members.group_id', '=', id)
      .orderBy('scim_users.user_name')
      .execute();
    return {
      id: row.id,
      displayName: row.display_name,
      externalId: row.external_id,
      members: members.map((member) => ({ value: member.id, display: member.user_name })),
      created: Number(row.created_at),
      lastModified: Number(row.updated_at),
      version: Number(row.version),
    };
  }
}

/** PostgreSQL's unique_violation, or SQLite's. */
function isUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

function columnsOf(resource: UserResource) {
  return {
    user_name: resource.userName,
    user_name_lower: resource.userName.toLowerCase(),
    external_id: resource.externalId ?? null,
    active: resource.active ? 1 : 0,
    resource: JSON.stringify(resource),
  };
}

function toScimUser(row: {
  id: string;
  user_id: string | null;
  resource: string;
  created_at: number;
  updated_at: number;
  version: number;
}): ScimUser {
  return {
    id: row.id,
    userId: row.user_id,
    resource: JSON.parse(row.resource) as UserResource,
    created: Number(row.created_at),
    lastModified: Number(row.updated_at),
    version: Number(row.version),
  };
}
