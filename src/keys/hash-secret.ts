import { createHmac, randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
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
    return readSecret(path);
  } catch (error) {
    if (error instanceof GatehouseError) throw error;
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw unreadable(path, error);
  }
  const secret = randomBytes(32).toString('base64url');
  try {
    mkdirSync(resolve(dataDir), { recursive: true, mode: 0o700 });
    // Written aside, then linked into place: the file appears whole or not at all, and link fails
    // with EEXIST if another process won the race, whose secret is then the one to use.
    const draft = `${path}.${process.pid}.tmp`;
    writeFileSync(draft, `${secret}\n`, { mode: 0o600 });
    try {
      linkSync(draft, path);
    } finally {
      unlinkSync(draft);
    }
    return secret;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return readSecret(path);
    throw unreadable(path, error);
  }
}

/** An empty file (a crash between create and write, or damage) must never mean "hash with no secret". */
function readSecret(path: string): string {
  const secret = readFileSync(path, 'utf8').trim();
  if (!secret) {
    throw new GatehouseError('KEY_SECRET_UNAVAILABLE', `${path} is empty; delete it or set auth.key_hash_secret`);
  }
  return secret;
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
