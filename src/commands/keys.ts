import type { DatabaseConfig } from '../config/index.js';
import { HttpError } from '../errors.js';
import { parseControls } from '../keys/controls.js';
import { loadKeyHashSecret } from '../keys/hash-secret.js';
import { ApiKeyStore, type ApiKeyInfo } from '../keys/store.js';
import { createLogger } from '../log.js';
import { openStorage, type Storage } from '../storage/database.js';
import { openSharedState } from '../storage/shared-state.js';
import { findUsersByEmail, recordSignIn, type User } from '../users/store.js';

/** Users an operator creates keys for before they ever sign in are recorded under this issuer. */
export const CLI_ISSUER = 'gatehouse:cli';
const DAY_MS = 86_400_000;

async function withKeyStore<T>(
  config: DatabaseConfig,
  work: (store: ApiKeyStore, storage: Storage) => Promise<T>,
): Promise<T> {
  const storage = await openStorage(config.database);
  try {
    const secret = loadKeyHashSecret(config.auth.key_hash_secret, config.gateway.data_dir);
    return await work(new ApiKeyStore(storage.db, secret, config.auth.api_key_prefix), storage);
  } finally {
    await storage.close();
  }
}

async function ownerFor(storage: Storage, email: string): Promise<User> {
  const [known] = await findUsersByEmail(storage.db, email);
  return known ?? recordSignIn(storage.db, { issuer: CLI_ISSUER, subject: email, email });
}

function line(key: ApiKeyInfo): string {
  const state =
    key.revoked_at !== null
      ? 'revoked'
      : key.expires_at !== null && key.expires_at <= Date.now()
        ? 'expired'
        : 'active';
  const day = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString().slice(0, 10));
  return [
    key.id,
    key.stub,
    state,
    key.owner_email ?? key.owner_subject,
    day(key.created_at),
    day(key.expires_at),
    key.name,
  ].join('\t');
}

export interface CreateKeyOptions {
  email: string;
  name: string;
  expiresInDays?: number;
  scopes?: string[];
  models?: string[];
  requestsPerMinute?: number;
  tokensPerMinute?: number;
}

export async function createKeyCommand(config: DatabaseConfig, options: CreateKeyOptions): Promise<string> {
  const controls = parseControls(
    {
      scopes: options.scopes,
      models: options.models,
      requests_per_minute: options.requestsPerMinute,
      tokens_per_minute: options.tokensPerMinute,
    },
    {
      maxRequestsPerMinute: config.auth.max_key_requests_per_minute,
      maxTokensPerMinute: config.auth.max_key_tokens_per_minute,
    },
  );
  const { api_key_max_days: maxDays } = config.auth;
  if (options.expiresInDays !== undefined && maxDays !== undefined && options.expiresInDays > maxDays) {
    throw new HttpError(400, 'expiry_too_long', `--expires-in-days may be at most ${maxDays} (auth.api_key_max_days)`);
  }
  const days = options.expiresInDays ?? maxDays;
  return withKeyStore(config, async (store, storage) => {
    const owner = await ownerFor(storage, options.email);
    const now = Date.now();
    const created = await store.create(
      owner,
      options.name,
      days === undefined ? null : now + days * DAY_MS,
      now,
      controls,
    );
    return [
      `Created ${created.id} "${created.name}" for ${options.email}${days ? `, expires ${new Date(created.expires_at!).toISOString()}` : ''}.`,
      'The key is shown once; store it now:',
      '',
      created.key,
      '',
    ].join('\n');
  });
}

export async function listKeysCommand(config: DatabaseConfig, options: { email?: string }): Promise<string> {
  return withKeyStore(config, async (store, storage) => {
    let keys: ApiKeyInfo[];
    if (options.email) {
      const users = await findUsersByEmail(storage.db, options.email);
      keys = (await Promise.all(users.map((user) => store.listForUser(user.id)))).flat();
    } else {
      keys = await store.listAll();
    }
    const header = ['ID', 'KEY', 'STATE', 'OWNER', 'CREATED', 'EXPIRES', 'NAME'].join('\t');
    return [header, ...keys.map(line)].join('\n') + '\n';
  });
}

export async function revokeKeyCommand(config: DatabaseConfig, id: string): Promise<string> {
  return withKeyStore(config, async (store, storage) => {
    if (!(await store.revoke(id, undefined))) throw new HttpError(404, 'api_key_not_found', `no API key with id ${id}`);
    // PostgreSQL announced it on commit and SQLite is polled; Redis's shared answers are invalidated
    // here, or by each gateway on hearing of it should Redis be out of reach from this machine.
    const shared = await openSharedState(storage, config.redis, createLogger('fatal'));
    try {
      await shared.revocations.keysChanged();
    } finally {
      await shared.close();
    }
    return `Revoked ${id}. Running gateways refuse it within 1 second.\n`;
  });
}
