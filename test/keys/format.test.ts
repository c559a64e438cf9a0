import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GatehouseError } from '../../src/errors.js';
import { displayStubOf, generateApiKey, isWellFormedApiKey } from '../../src/keys/format.js';
import { hashApiKey, loadKeyHashSecret } from '../../src/keys/hash-secret.js';

const PREFIX = 'gth_';
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Every string that differs from `key` in exactly one character, that character drawn from `alphabet`. */
function singleCharacterChanges(key: string, alphabet: string): string[] {
  const changed: string[] = [];
  for (let position = 0; position < key.length; position++) {
    for (const replacement of alphabet) {
      if (replacement !== key[position]) changed.push(key.slice(0, position) + replacement + key.slice(position + 1));
    }
  }
  return changed;
}

describe('generateApiKey', () => {
  it('makes the prefix, 30 random and 6 checksum characters, all base62', () => {
    for (let i = 0; i < 100; i++) expect(generateApiKey(PREFIX)).toMatch(/^gth_[0-9A-Za-z]{36}$/);
  });

  it('uses the configured prefix', () => {
    expect(generateApiKey('corp9_')).toMatch(/^corp9_[0-9A-Za-z]{36}$/);
  });

  it('makes 1000 distinct keys', () => {
    const keys = Array.from({ length: 1000 }, () => generateApiKey(PREFIX));
    expect(new Set(keys).size).toBe(1000);
    expect(new Set(keys.map((key) => key.slice(PREFIX.length, PREFIX.length + 30))).size).toBe(1000);
  });

  it('draws random characters evenly from all 62 (no modulo bias)', () => {
    const counts = new Map<string, number>(Array.from(BASE62, (c) => [c, 0]));
    const keys = 3000;
    for (let i = 0; i < keys; i++) {
      for (const c of generateApiKey(PREFIX).slice(PREFIX.length, PREFIX.length + 30))
        counts.set(c, counts.get(c)! + 1);
    }
    const expected = (keys * 30) / 62;
    const chiSquare = [...counts.values()].reduce((sum, seen) => sum + (seen - expected) ** 2 / expected, 0);
    expect(counts.size).toBe(62);
    // 61 degrees of freedom: p < 1e-6 beyond about 125. `byte % 62` without rejection scores in the thousands.
    expect(chiSquare).toBeLessThan(130);
    for (const seen of counts.values()) expect(seen).toBeGreaterThan(expected * 0.8);
  });
});

describe('isWellFormedApiKey', () => {
  const key = generateApiKey(PREFIX);

  it('accepts a generated key', () => {
    expect(isWellFormedApiKey(key, PREFIX)).toBe(true);
  });

  it('rejects every single base62 character change at every position (checksum or prefix catches it)', () => {
    const changed = singleCharacterChanges(key, BASE62 + '_');
    expect(changed.length).toBeGreaterThan(40 * 60);
    const accepted = changed.filter((candidate) => isWellFormedApiKey(candidate, PREFIX));
    expect(accepted).toEqual([]);
  });

  it('rejects characters outside base62 in the random part even with a matching length', () => {
    for (const bad of ['-', '_', '+', '/', '=', ' ', 'é', '\u0000']) {
      for (let position = PREFIX.length; position < key.length; position++) {
        expect(isWellFormedApiKey(key.slice(0, position) + bad + key.slice(position + 1), PREFIX)).toBe(false);
      }
    }
  });

  it('rejects a key with another prefix, even one whose checksum was recomputed for it', () => {
    expect(isWellFormedApiKey(key, 'abc_')).toBe(false);
    expect(isWellFormedApiKey(`GTH_${key.slice(4)}`, PREFIX)).toBe(false);
    const other = generateApiKey('oth_');
    expect(isWellFormedApiKey(other, PREFIX)).toBe(false);
    expect(isWellFormedApiKey(other, 'oth_')).toBe(true);
  });

  it('rejects wrong lengths: truncated, extended, empty, prefix only', () => {
    expect(isWellFormedApiKey(key.slice(0, -1), PREFIX)).toBe(false);
    expect(isWellFormedApiKey(`${key}0`, PREFIX)).toBe(false);
    expect(isWellFormedApiKey(`0${key}`, PREFIX)).toBe(false);
    expect(isWellFormedApiKey('', PREFIX)).toBe(false);
    expect(isWellFormedApiKey(PREFIX, PREFIX)).toBe(false);
    expect(isWellFormedApiKey(`${key} `, PREFIX)).toBe(false);
  });

  it('rejects other vendors’ token shapes', () => {
    for (const token of [
      'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD',
      'ghp_abcdefghijklmnopqrstuvwxyz0123456789',
      'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln',
    ]) {
      expect(isWellFormedApiKey(token, PREFIX)).toBe(false);
    }
  });
});

describe('displayStubOf', () => {
  it('shows the prefix and the last four characters only', () => {
    const key = generateApiKey(PREFIX);
    const stub = displayStubOf(key, PREFIX);
    expect(stub).toBe(`gth_…${key.slice(-4)}`);
    expect(stub).not.toContain(key.slice(PREFIX.length, PREFIX.length + 30));
  });
});

describe('hashApiKey', () => {
  const key = generateApiKey(PREFIX);
  const secretA = 'a'.repeat(32);
  const secretB = 'b'.repeat(32);

  it('is deterministic for one secret and differs for another', () => {
    expect(hashApiKey(secretA, key)).toBe(hashApiKey(secretA, key));
    expect(hashApiKey(secretA, key)).not.toBe(hashApiKey(secretB, key));
  });

  it('differs per key and is a base64url HMAC-SHA-256 that contains no part of the key', () => {
    const hash = hashApiKey(secretA, key);
    expect(hash).toMatch(/^[\w-]{43}$/);
    expect(hashApiKey(secretA, generateApiKey(PREFIX))).not.toBe(hash);
    expect(hash).not.toContain(key.slice(PREFIX.length, PREFIX.length + 8));
  });
});

describe('loadKeyHashSecret', () => {
  const dirs: string[] = [];
  const freshDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-secret-'));
    dirs.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('generates the secret into data_dir/key_hash_secret with mode 0600 and returns the same value next time', () => {
    const dataDir = join(freshDir(), 'nested', 'data');
    const first = loadKeyHashSecret(undefined, dataDir);
    expect(first.length).toBeGreaterThanOrEqual(32);
    const file = join(dataDir, 'key_hash_secret');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(dataDir).mode & 0o077).toBe(0);
    expect(loadKeyHashSecret(undefined, dataDir)).toBe(first);
  });

  it('generates a different secret for another data directory', () => {
    expect(loadKeyHashSecret(undefined, freshDir())).not.toBe(loadKeyHashSecret(undefined, freshDir()));
  });

  it('uses the configured secret and writes no file', () => {
    const dataDir = freshDir();
    const configured = 'configured-secret-that-is-32-chars-long';
    expect(loadKeyHashSecret(configured, dataDir)).toBe(configured);
    expect(() => statSync(join(dataDir, 'key_hash_secret'))).toThrow();
  });

  it('fails with an actionable error when data_dir cannot be written', () => {
    const blocker = join(freshDir(), 'not-a-directory');
    writeFileSync(blocker, 'x');
    expect(() => loadKeyHashSecret(undefined, blocker)).toThrow(GatehouseError);
    expect(() => loadKeyHashSecret(undefined, blocker)).toThrow(/auth\.key_hash_secret/);
  });

  it('never hashes with an empty secret read from an empty key_hash_secret file', () => {
    // A second process reading between the first one's exclusive create and its write sees an empty file.
    const dataDir = freshDir();
    writeFileSync(join(dataDir, 'key_hash_secret'), '\n', { mode: 0o600 });
    expect(() => loadKeyHashSecret(undefined, dataDir)).toThrow(GatehouseError);
  });
});
