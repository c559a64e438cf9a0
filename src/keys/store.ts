import { randomBytes } from 'node:crypto';
import { HttpError } from '../errors.js';
import type { Db } from '../storage/database.js';
import { toUser, USER_COLUMNS, type User } from '../users/store.js';
import { DEFAULT_CONTROLS, type KeyControls, type Scope } from './controls.js';
import { displayStubOf, generateApiKey, isWellFormedApiKey } from './format.js';
import { hashApiKey } from './hash-secret.js';

export interface ApiKeyInfo extends KeyControls {
  id: string;
  name: string;
  stub: string;
  owner_subject: string;
  owner_email: string | null;
  created_at: number;
  expires_at: number | null;
  last_used_at: number | null;
  revoked_at: number | null;
  /** Set once the key was rotated: the id of the key that replaces it (the old one lives out its grace). */
  replaced_by: string | null;
}

export interface CreatedApiKey extends ApiKeyInfo {
  /** The secret; shown once and never stored. */
  key: string;
}

/** A key as verification needs it, with its owner. */
export interface ApiKeyRecord {
  id: string;
  expires_at: number | null;
  revoked_at: number | null;
  controls: KeyControls;
  user: User;
}

const INFO_COLUMNS = [
  'api_keys.id',
  'api_keys.name',
  'api_keys.stub',
  'api_keys.owner_subject',
  'api_keys.owner_email',
  'api_keys.created_at',
  'api_keys.expires_at',
  'api_keys.last_used_at',
  'api_keys.revoked_at',
  'api_keys.scopes',
  'api_keys.models',
  'api_keys.requests_per_minute',
  'api_keys.tokens_per_minute',
  'api_keys.replaced_by',
] as const;

interface StoredControls {
  scopes: string;
  models: string | null;
  requests_per_minute: number | null;
  tokens_per_minute: number | null;
}

function toNumberOrNull(value: number | null): number | null {
  return value === null ? null : Number(value);
}

function controlsOf(row: StoredControls): KeyControls {
  return {
    scopes: JSON.parse(row.scopes) as Scope[],
    models: row.models === null ? null : (JSON.parse(row.models) as string[]),
    requests_per_minute: toNumberOrNull(row.requests_per_minute),
    tokens_per_minute: toNumberOrNull(row.tokens_per_minute),
  };
}

function storedControls(controls: KeyControls): StoredControls {
  return {
    scopes: JSON.stringify(controls.scopes),
    models: controls.models === null ? null : JSON.stringify(controls.models),
    requests_per_minute: controls.requests_per_minute,
    tokens_per_minute: controls.tokens_per_minute,
  };
}

type InfoRow = Omit<ApiKeyInfo, keyof KeyControls> & StoredControls;

function normalise<T extends InfoRow>(row: T): Omit<T, keyof StoredControls> & ApiKeyInfo {
  return {
    ...row,
    ...controlsOf(row),
    created_at: Number(row.created_at),
    expires_at: toNumberOrNull(row.expires_at),
    last_used_at: toNumberOrNull(row.last_used_at),
    revoked_at: toNumberOrNull(row.revoked_at),
  };
}

/** One page of a list, newest first; `after` names the last item, for the next page. */
export interface Page<T> {
  data: T[];
  has_more: boolean;
}

export interface PageRequest {
  limit: number;
  /** The id of the last item of the previous page. */
  after?: string;
}

/** Cuts the one extra row a page query reads to learn whether more follow. */
export function pageOf<T>(rows: T[], limit: number): Page<T> {
  return { data: rows.slice(0, limit), has_more: rows.length > limit };
}

async function countLive(db: Db, userId: string, now: number): Promise<number> {
  const row = await db
    .selectFrom('api_keys')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

/** API keys in the database: created, listed, rotated, revoked, found by hash. */
export class ApiKeyStore {
  constructor(
    private readonly db: Db,
    private readonly hashSecret: string,
    private readonly prefix: string,
  ) {}

  hash(key: string): string {
    return hashApiKey(this.hashSecret, key);
  }

  /**
   * Creates a key unless its owner already holds `maxLive` live keys (409). The check and the insert
   * run in one transaction that first updates the owner's row, so concurrent creations for one user
   * wait for each other (PostgreSQL's row lock; SQLite runs one write transaction at a time) and the
   * cap holds under any number of parallel requests.
   */
  async createWithin(
    maxLive: number,
    owner: User,
    name: string,
    expiresAt: number | null,
    now: number,
    controls: KeyControls,
  ): Promise<CreatedApiKey> {
    return this.db.transaction().execute(async (trx) => {
      await trx.updateTable('users').set({ id: owner.id }).where('id', '=', owner.id).execute();
      const live = await countLive(trx, owner.id, now);
      if (live >= maxLive) {
        throw new HttpError(
          409,
          'too_many_api_keys',
          `You have ${live} live API keys, the most this gateway allows; revoke one at /v1/auth/account first.`,
        );
      }
      return this.insertKey(trx, owner, name, expiresAt, now, controls);
    });
  }

  async create(
    owner: User,
    name: string,
    expiresAt: number | null,
    now = Date.now(),
    controls: KeyControls = DEFAULT_CONTROLS,
  ): Promise<CreatedApiKey> {
    return this.insertKey(this.db, owner, name, expiresAt, now, controls);
  }

  private async insertKey(
    db: Db,
    owner: User,
    name: string,
    expiresAt: number | null,
    now: number,
    controls: KeyControls,
  ): Promise<CreatedApiKey> {
    const key = generateApiKey(this.prefix);
    const info = {
      id: `key_${randomBytes(9).toString('base64url')}`,
      owner_subject: owner.subject,
      owner_email: owner.email,
      name,
      stub: displayStubOf(key, this.prefix),
      created_at: now,
      expires_at: expiresAt,
      last_used_at: null,
      revoked_at: null,
      replaced_by: null,
    };
    await db
      .insertInto('api_keys')
      .values({ ...info, ...storedControls(controls), user_id: owner.id, hash: this.hash(key) })
      .execute();
    return { ...info, ...controls, key };
  }

  /** Keys of this user that still work (not revoked, not expired), rotation graces included. */
  countActive(userId: string, now = Date.now()): Promise<number> {
    return countLive(this.db, userId, now);
  }

  /** A live key of this owner, with its controls; undefined when there is none. */
  async findActive(id: string, ownerId: string, now = Date.now()): Promise<ApiKeyInfo | undefined> {
    const row = await this.db
      .selectFrom('api_keys')
      .select(INFO_COLUMNS)
      .where('id', '=', id)
      .where('user_id', '=', ownerId)
      .where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
      .executeTakeFirst();
    return row && normalise(row);
  }

  /**
   * A new secret for an existing key, with the same name, owner, expiry and controls. The old secret
   * keeps working until `graceMs` from now (or its own earlier expiry), so programs can be switched
   * over without downtime. A key is rotated once: rotating it again would hand its replacement the
   * grace-shortened expiry, so the new key would die with the old one.
   */
  async rotate(id: string, owner: User, graceMs: number, now = Date.now()): Promise<CreatedApiKey | undefined> {
    const old = await this.db
      .selectFrom('api_keys')
      .select(INFO_COLUMNS)
      .where('id', '=', id)
      .where('user_id', '=', owner.id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (!old) return undefined;
    if (old.replaced_by !== null) {
      throw new HttpError(
        409,
        'api_key_already_rotated',
        `This key was already rotated; its replacement is ${old.replaced_by}. Rotate that one instead.`,
      );
    }
    const current = normalise(old);
    if (current.expires_at !== null && current.expires_at <= now) return undefined;
    const graceEnds = current.expires_at === null ? now + graceMs : Math.min(current.expires_at, now + graceMs);
    const { scopes, models, requests_per_minute, tokens_per_minute } = current;
    const created = await this.create(owner, current.name, current.expires_at, now, {
      scopes,
      models,
      requests_per_minute,
      tokens_per_minute,
    });
    // Conditional on not being replaced yet, so two rotations racing leave one replacement live.
    const marked = await this.db
      .updateTable('api_keys')
      .set({ expires_at: graceEnds, replaced_by: created.id })
      .where('id', '=', id)
      .where('replaced_by', 'is', null)
      .executeTakeFirst();
    if (marked.numUpdatedRows === 0n) {
      await this.db.updateTable('api_keys').set({ revoked_at: now }).where('id', '=', created.id).execute();
      throw new HttpError(
        409,
        'api_key_already_rotated',
        'This key was rotated meanwhile; rotate its replacement instead.',
      );
    }
    return created;
  }

  /** Every key of a user, for the command line; HTTP lists read pages. */
  async listForUser(userId: string): Promise<ApiKeyInfo[]> {
    return this.list(userId, {});
  }

  /** Every key, for the command line; HTTP lists read pages. */
  async listAll(): Promise<Array<ApiKeyInfo & { user_id: string }>> {
    return this.list(undefined, {});
  }

  async pageForUser(userId: string, page: PageRequest): Promise<Page<ApiKeyInfo>> {
    return pageOf(await this.list(userId, page), page.limit);
  }

  async pageAll(page: PageRequest): Promise<Page<ApiKeyInfo & { user_id: string }>> {
    return pageOf(await this.list(undefined, page), page.limit);
  }

  /** Newest first, by (created_at, id), one row more than a page; keyset paging costs the same on every page. */
  private async list(userId: string | undefined, { limit, after }: Partial<PageRequest>) {
    let query = this.db.selectFrom('api_keys').select([...INFO_COLUMNS, 'api_keys.user_id']);
    if (userId !== undefined) query = query.where('user_id', '=', userId);
    if (after !== undefined) {
      const last = await this.db.selectFrom('api_keys').select('created_at').where('id', '=', after).executeTakeFirst();
      if (!last) return [];
      query = query.where((eb) =>
        eb.or([
          eb('created_at', '<', last.created_at),
          eb.and([eb('created_at', '=', last.created_at), eb('id', '<', after)]),
        ]),
      );
    }
    query = query.orderBy('created_at', 'desc').orderBy('id', 'desc');
    const rows = await (limit === undefined ? query : query.limit(limit + 1)).execute();
    return rows.map(normalise);
  }

  /** Revokes a key if `userId` owns it (any key when undefined); false when there is no such key. */
  async revoke(id: string, userId: string | undefined, now = Date.now()): Promise<boolean> {
    let query = this.db
      .updateTable('api_keys')
      .set({ revoked_at: now })
      .where('id', '=', id)
      .where('revoked_at', 'is', null);
    if (userId !== undefined) query = query.where('user_id', '=', userId);
    const result = await query.executeTakeFirst();
    if (result.numUpdatedRows > 0n) return true;
    // Revoking an already revoked key of one's own is not an error: the outcome the caller wants holds.
    let existing = this.db.selectFrom('api_keys').select('id').where('id', '=', id);
    if (userId !== undefined) existing = existing.where('user_id', '=', userId);
    return (await existing.executeTakeFirst()) !== undefined;
  }

  /**
   * Takes a key its owner no longer needs to see off their list: only one that can never work again
   * (revoked, or expired), so removing cannot be used to skip a revocation. The audit log keeps its record.
   */
  async removeDead(id: string, userId: string, now = Date.now()): Promise<boolean> {
    const result = await this.db
      .deleteFrom('api_keys')
      .where('id', '=', id)
      .where('user_id', '=', userId)
      .where((eb) => eb.or([eb('revoked_at', 'is not', null), eb('expires_at', '<=', now)]))
      .executeTakeFirst();
    return result.numDeletedRows > 0n;
  }

  /**
   * Revokes whichever of these strings are live keys, for leak reports. Strings that are not
   * well-formed keys cost nothing; the ids revoked are returned for the audit, never to the caller.
   */
  async revokeLeaked(candidates: readonly string[], now = Date.now()): Promise<string[]> {
    const hashes = candidates
      .filter((candidate) => isWellFormedApiKey(candidate, this.prefix))
      .map((key) => this.hash(key));
    if (hashes.length === 0) return [];
    const rows = await this.db
      .updateTable('api_keys')
      .set({ revoked_at: now })
      .where('hash', 'in', hashes)
      .where('revoked_at', 'is', null)
      .returning('id')
      .execute();
    return rows.map((row) => row.id);
  }

  async findByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const row = await this.db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select([
        'api_keys.id as key_id',
        'api_keys.expires_at',
        'api_keys.revoked_at',
        'api_keys.scopes',
        'api_keys.models',
        'api_keys.requests_per_minute',
        'api_keys.tokens_per_minute',
        ...USER_COLUMNS,
      ])
      .where('api_keys.hash', '=', hash)
      .executeTakeFirst();
    if (!row) return undefined;
    const { key_id, expires_at, revoked_at, scopes, models, requests_per_minute, tokens_per_minute, ...user } = row;
    return {
      id: key_id,
      expires_at: toNumberOrNull(expires_at),
      revoked_at: toNumberOrNull(revoked_at),
      controls: controlsOf({ scopes, models, requests_per_minute, tokens_per_minute }),
      user: toUser(user),
    };
  }

  /** Records use times in one statement per key; called in batches off the request path. */
  async recordUse(lastUsed: Map<string, number>): Promise<void> {
    for (const [id, at] of lastUsed) {
      await this.db.updateTable('api_keys').set({ last_used_at: at }).where('id', '=', id).execute();
    }
  }
}
