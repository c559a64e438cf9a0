import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log.js';
import { createLogger } from '../../src/log.js';
import { patchOperationsOf } from '../../src/scim/patch.js';
import { PATCH_SCHEMA, USER_SCHEMA, toUserResource } from '../../src/scim/resources.js';
import { linkAtSignIn } from '../../src/scim/link.js';
import { ScimStore } from '../../src/scim/store.js';
import type { Change } from '../../src/storage/changes.js';
import { openStorage, type Storage } from '../../src/storage/database.js';
import { Revocations } from '../../src/storage/revocations.js';
import { noSharedCache } from '../../src/storage/shared-cache.js';
import { recordSignIn, setSignInHook } from '../../src/users/store.js';

const ISSUER = 'https://id.example.com';
const RULES = { adminGroups: ['admins'], adminEmails: [], allowedGroups: [], allowUnverifiedEmail: false };

describe('matching a provisioned user at sign-in', () => {
  let storage: Storage;
  let store: ScimStore;
  let announced: Change[];

  beforeEach(async () => {
    storage = await openStorage('sqlite::memory:');
    store = new ScimStore(storage.db, RULES);
    announced = [];
    const bus = {
      publish: (change: Change) => void announced.push(change),
      subscribe: () => undefined,
      close: async () => {},
    };
    const audit = new AuditLog(storage.db, createLogger('silent'));
    setSignInHook(storage.db, linkAtSignIn(storage.db, store, new Revocations(bus, noSharedCache), audit));
  });
  afterEach(() => storage.close());

  const provision = (userName: string, active: boolean, externalId?: string) =>
    store.createUser(
      toUserResource({ schemas: [USER_SCHEMA], userName, active, ...(externalId ? { externalId } : {}) }),
    );
  const signInWith = (email: string, claims: Record<string, unknown> = {}) =>
    recordSignIn(storage.db, { issuer: ISSUER, subject: `sub-${email}`, email, claims: { email, ...claims } });

  it('links by userName, without case, and applies a deactivation pushed before the first sign-in', async () => {
    const { result } = await provision('Ada@Example.com', false);
    const user = await signInWith('ada@example.com');
    expect(user.disabled).toBe(true);
    expect((await store.getUser(result.id))?.userId).toBe(user.id);
    expect(announced).toContainEqual({ kind: 'user_disabled', userId: user.id });
  });

  it('links by externalId when that is the email', async () => {
    const { result } = await provision('00u1okta', false, 'grace@example.com');
    const user = await signInWith('grace@example.com');
    expect(user.disabled).toBe(true);
    expect((await store.getUser(result.id))?.userId).toBe(user.id);
  });

  it('never links an email the provider marks unverified', async () => {
    const { result } = await provision('eve@example.com', false);
    for (const verified of [false, 'false']) {
      const user = await signInWith('eve@example.com', { email_verified: verified });
      expect(user.disabled).toBe(false);
    }
    expect((await store.getUser(result.id))?.userId).toBeNull();
  });

  it('links a user who signed in before being provisioned when the provider pushes them', async () => {
    const before = await signInWith('lin@example.com');
    const { result, effects } = await provision('lin@example.com', false);
    expect(result.userId).toBe(before.id);
    expect(effects.disabled).toEqual([before.id]);
  });

  it('gives the role of the groups pushed over SCIM, whatever the groups claim said', async () => {
    const { result } = await provision('kim@example.com', true);
    await store.createGroup({ displayName: 'admins', externalId: null, members: [result.id] });
    const user = await recordSignIn(storage.db, {
      issuer: ISSUER,
      subject: 'kim',
      email: 'kim@example.com',
      role: 'user',
      groups: ['from-claim'],
      claims: { email: 'kim@example.com' },
    });
    expect(user).toMatchObject({ role: 'admin', groups: ['admins'] });
  });

  it('ends the sessions of a user who leaves every allowed group, and refuses a member who is no user', async () => {
    const strict = new ScimStore(storage.db, { ...RULES, allowedGroups: ['staff'] });
    const { result } = await provision('noor@example.com', true);
    const { result: group } = await strict.createGroup({
      displayName: 'staff',
      externalId: null,
      members: [result.id],
    });
    const user = await signInWith('noor@example.com');
    const now = Date.now();
    await storage.db
      .insertInto('sessions')
      .values({
        id_hash: 'h1',
        user_id: user.id,
        id_token: null,
        created_at: now,
        last_seen_at: now,
        expires_at: now + 60_000,
        refresh_token: null,
        refresh_token_version: 0,
        refresh_claimed_at: null,
        id_token_expires_at: null,
        sid: null,
      })
      .execute();
    const operations = patchOperationsOf({
      schemas: [PATCH_SCHEMA],
      Operations: [{ op: 'remove', path: `members[value eq "${result.id}"]` }],
    });
    const { effects } = await strict.patchGroup(group.id, operations);
    expect(effects.excluded).toEqual([user.id]);
    expect(await storage.db.selectFrom('sessions').selectAll().where('user_id', '=', user.id).execute()).toEqual([]);

    const add = patchOperationsOf({
      schemas: [PATCH_SCHEMA],
      Operations: [{ op: 'add', path: 'members', value: [{ value: result.id }, { value: 'nobody' }] }],
    });
    await expect(strict.patchGroup(group.id, add)).rejects.toMatchObject({ scimType: 'invalidValue' });
    expect((await strict.getGroup(group.id))?.members).toEqual([]);
  });
});
