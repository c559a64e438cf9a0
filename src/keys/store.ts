import { randomBytes } from 'node:crypto';
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

  async create(
    owner: User,
    name: string,
    expiresAt: number | null,
    now = Date.now(),
    controls: KeyControls = DEFAULT_CONTROLS,
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
    };
    await this.db
      .insertInto('api_keys')
      .values({ ...info, ...storedControls(controls), user_id: owner.id, hash: this.hash(key) })
      .execute();
    return { ...info, ...controls, key };
  }

  /**
   * A new secret for an existing key, with the same name, owner and controls. The old secret keeps
   * working until `graceMs` from now (or its own earlier expiry), so programs can be switched over
   * without downtime.
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
    const current = normalise(old);
    if (current.expires_at !== null && current.expires_at <= now) return undefined;
    const graceEnds = current.expires_at === null ? now + graceMs : Math.min(current.expires_at, now + graceMs);
    await this.db.updateTable('api_keys').set({ expires_at: graceEnds }).where('id', '=', id).execute();
    const { scopes, models, requests_per_minute, tokens_per_minute } = current;
    return this.create(owner, current.name, current.expires_at, now, {
      scopes,
      models,
      requests_per_minute,
      tokens_per_minute,
    });
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
      .select([...INFO_COLUMNS, 'api_keys.user_id'])
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
