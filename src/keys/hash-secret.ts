import { createHmac, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { GatehouseError } from '../errors.js';

const SECRET_FILE = 'key_hash_secret';

/**
 * The server secret API keys are hashed with. Generated once into the data directory (mode 0600)
 * when not configured, so a stolen database alone lets nobody test candidate keys offline.
 */
export function loadKeyHashSecret(configured: string | undefined, dataDir: string): string {
  if (configured) return configured;
  const path = join(resolve(dataDir), SECRET_FILE);
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw unreadable(path, error);
  }
  const secret = randomBytes(32).toString('base64url');
  try {
    mkdirSync(resolve(dataDir), { recursive: true, mode: 0o700 });
    // 'wx' fails if another process created it first; then theirs is the one to use.
    writeFileSync(path, `${secret}\n`, { flag: 'wx', mode: 0o600 });
    chmodSync(path, 0o600);
    return secret;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(path, 'utf8').trim();
    throw unreadable(path, error);
  }
}

function unreadable(path: string, error: unknown): GatehouseError {
  return new GatehouseError(
    'KEY_SECRET_UNAVAILABLE',
    `cannot read or create ${path} (${(error as Error).message}); set auth.key_hash_secret or make gateway.data_dir writable`,
    { cause: error },
  );
}

/** HMAC-SHA-256 of a key under the server secret: what is stored and looked up instead of the key. */
export function hashApiKey(secret: string, key: string): string {
  return createHmac('sha256', secret).update(key).digest('base64url');
}
