import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** 62^30 > 2^178: beyond any guessing, as GitHub's tokens (github.blog, "Behind GitHub's new authentication token formats"). */
const RANDOM_LENGTH = 30;
/** 62^6 > 2^32, so any CRC32 fits. */
const CHECKSUM_LENGTH = 6;

function toBase62(value: number, width: number): string {
  let out = '';
  for (let rest = value; out.length < width; rest = Math.floor(rest / 62)) out = BASE62[rest % 62] + out;
  return out;
}

function checksumOf(body: string): string {
  return toBase62(crc32(body), CHECKSUM_LENGTH);
}

/** Uniform base62 by rejection sampling: 248 = 4 * 62, so bytes >= 248 are discarded to avoid bias. */
function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

/** A new API key: prefix, 30 random base62 characters, and a CRC32 of those in 6 base62 characters. */
export function generateApiKey(prefix: string): string {
  const body = prefix + randomBase62(RANDOM_LENGTH);
  return body + checksumOf(body);
}

/**
 * Whether a string is shaped like one of our keys with a valid checksum. Typos, truncations and
 * other vendors' tokens fail here without a database read, and secret scanners can tell our keys
 * from random strings.
 */
export function isWellFormedApiKey(candidate: string, prefix: string): boolean {
  if (candidate.length !== prefix.length + RANDOM_LENGTH + CHECKSUM_LENGTH || !candidate.startsWith(prefix))
    return false;
  const random = candidate.slice(prefix.length, prefix.length + RANDOM_LENGTH);
  const body = prefix + random;
  if (!/^[0-9A-Za-z]+$/.test(random)) return false;
  return checksumOf(body) === candidate.slice(body.length);
}

/** What the account page shows so a person can tell keys apart: prefix and the last four. */
export function displayStubOf(key: string, prefix: string): string {
  return `${prefix}…${key.slice(-4)}`;
}
