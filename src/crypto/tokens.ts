import { createHash, randomBytes } from 'node:crypto';

/** 256 bits from the system CSPRNG, URL-safe; used for session ids, login flow ids and OAuth parameters. */
export function randomToken(): string {
  return randomBytes(32).toString('base64url');
}

/** What is stored in place of a bearer secret, so a database copy cannot be replayed. */
export function sha256(value: string): string {
  return createHash('sha256').update(value).digest('base64url');
}
