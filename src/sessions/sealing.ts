import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';

const FORMAT = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** HKDF `info` (RFC 5869 3.2): a key derived for sealing refresh tokens is useless for anything else. */
const PURPOSE = 'gatehouse/session-refresh-token/aes-256-gcm/v1';

/**
 * The key that seals refresh tokens at rest, derived with HKDF-SHA256 from the server secret API
 * keys are hashed with. One secret to keep, and a stolen database holds no usable refresh token.
 */
export function deriveSealingKey(serverSecret: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', serverSecret, '', PURPOSE, 32)));
}

/**
 * AES-256-GCM with a random 96-bit nonce (NIST SP 800-38D 8.2.2). `context` is authenticated but not
 * stored: a sealed value copied to another session's row no longer opens.
 */
export function seal(key: KeyObject, plaintext: string, context: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const sealed = Buffer.concat([iv, cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return `${FORMAT}.${sealed.toString('base64url')}`;
}

/** The plaintext, or undefined when the value was sealed under another key or context, or altered. */
export function open(key: KeyObject, sealed: string, context: string): string | undefined {
  const [format, body] = sealed.split('.');
  if (format !== FORMAT || !body) return undefined;
  const bytes = Buffer.from(body, 'base64url');
  if (bytes.length < IV_BYTES + TAG_BYTES) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, IV_BYTES), { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
    return Buffer.concat([
      decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)),
      decipher.final(),
    ]).toString('utf8');
  } catch {
    return undefined;
  }
}
