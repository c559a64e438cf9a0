import { randomBytes } from 'node:crypto';
import type { Db } from '../storage/database.js';
import { toUser, USER_COLUMNS, type User } from '../users/store.js';
import { displayStubOf, generateApiKey } from './format.js';
import { hashApiKey } from './hash-secret.js';

export interface ApiKeyInfo {
  id: string;
  name: string;
  stub: string;
  owner_subject: string;
  owner_email: string | null;
  created_at: number;
  expires_at: number | null;
  last_used_at: number | null;
  revoked_at: number | null;
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
  user: User;
}

const INFO_COLUMNS = [
  'id',
  'name',
  'stub',
  'owner_subject',
  'owner_email',
  'created_at',
  'expires_at',
  'last_used_at',
  'revoked_at',
] as const;

function toNumberOrNull(value: number | null): number | null {
  return value === null ? null : Number(value);
}

function normalise<T extends ApiKeyInfo>(row: T): T {
  return {
    ...row,
    created_at: Number(row.created_at),
    expires_at: toNumberOrNull(row.expires_at),
    last_used_at: toNumberOrNull(row.last_used_at),
    revoked_at: toNumberOrNull(row.revoked_at),
  };
}

/** API keys in the database: created, listed, revoked, found by hash. */
export class ApiKeyStore {
  constructor(
    private readonly db: Db,
    private readonly hashSecret: string,
    private readonly prefix: string,
  ) {}

  hash(key: string): string {
    return hashApiKey(this.hashSecret, key);
  }

  async create(owner: User, name: string, expiresAt: number | null, now = Date.now()): Promise<CreatedApiKey> {
    const key = generateApiKey(this.prefix);
    const row = {
      id: `key_${randomBytes(9).toString('base64url')}`,
      user_id: owner.id,
      owner_subject: owner.subject,
      owner_email: owner.email,
      name,
      hash: this.hash(key),
      stub: displayStubOf(key, this.prefix),
      created_at: now,
      expires_at: expiresAt,
      last_used_at: null,
      revoked_at: null,
    };
    await this.db.insertInto('api_keys').values(row).execute();
    const { user_id: _user, hash: _hash, ...info } = row;
    return { ...info, key };
  }

  async listForUser(userId: string): Promise<ApiKeyInfo[]> {
    const rows = await this.db
      .selectFrom('api_keys')
      .select(INFO_COLUMNS)
      .where('user_id', '=', userId)
      .orderBy('created_at', 'desc')
      .execute();
    return rows.map(normalise);
  }

  async listAll(): Promise<Array<ApiKeyInfo & { user_id: string }>> {
    const rows = await this.db
      .selectFrom('api_keys')
      .select([...INFO_COLUMNS, 'user_id'])
      .orderBy('created_at', 'desc')
      .execute();
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

  async findByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const row = await this.db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select(['api_keys.id as key_id', 'api_keys.expires_at', 'api_keys.revoked_at', ...USER_COLUMNS])
      .where('api_keys.hash', '=', hash)
      .executeTakeFirst();
    if (!row) return undefined;
    const { key_id, expires_at, revoked_at, ...user } = row;
    return {
      id: key_id,
      expires_at: toNumberOrNull(expires_at),
      revoked_at: toNumberOrNull(revoked_at),
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
