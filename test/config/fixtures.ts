import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/index.js';
import { ConfigError } from '../../src/errors.js';

/** Secrets used by the fixtures; tests search messages and output for them. */
export const SECRETS = {
  client: 'client-secret-7f3a9c51',
  upstream: 'upstream-key-0b8e2d46',
  hash: 'hash-secret-4c1d9e7a0b3f5e8d2a6c9f1b',
  token: 'test-token-5a7c9e1b3d',
  dbPassword: 'db-pass-e3b0c442',
  redisPassword: 'redis-pass-98fc1c14',
  scimToken: 'scim-token-2f6b8d0e4a1c7e9b3d5f8a2c6e0b4d7f',
};

/** The smallest edits that pass validation with auth enabled. */
export const MINIMAL = {
  powerml: { website: 'https://llm.example.com' },
  auth_provider: {
    client_id: 'gatehouse',
    client_secret: SECRETS.client,
    server_metadata_url: 'https://id.example.com/.well-known/openid-configuration',
  },
  gateway: { upstream: 'http://127.0.0.1:8000' },
};

/** MINIMAL as YAML, with each section in `changes` merged key by key (a mapping) or replaced (anything else). */
export function editsYaml(changes: Record<string, unknown> = {}): string {
  const base: Record<string, unknown> = { ...MINIMAL };
  for (const [section, value] of Object.entries(changes)) {
    const current = base[section];
    const bothMappings = isPlainObject(current) && isPlainObject(value);
    base[section] = bothMappings ? { ...current, ...value } : value;
  }
  return stringify(base);
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

let dir: string | undefined;
let count = 0;

/** Writes text to a new file under the OS temp directory and returns its path. */
export function writeEditsFile(text: string): string {
  dir ??= mkdtempSync(join(tmpdir(), 'gatehouse-config-'));
  const path = join(dir, `edits-${++count}.yaml`);
  writeFileSync(path, text);
  return path;
}

export function removeEditsFiles(): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
}

/** Loads `text` from a file and returns the ConfigError's message; fails if the file loads. */
export function loadError(text: string, env: NodeJS.ProcessEnv = {}): { path: string; message: string } {
  const path = writeEditsFile(text);
  try {
    loadConfig(path, env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return { path, message: error.message };
  }
  throw new Error(`expected ${path} to be rejected`);
}
