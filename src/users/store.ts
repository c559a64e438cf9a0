import { randomUUID } from 'node:crypto';
import type { Db } from '../storage/database.js';

export interface User {
  id: string;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
}

export interface ProviderIdentity {
  issuer: string;
  subject: string;
  email?: string;
  name?: string;
}

/**
 * Records a sign-in. A user is keyed by the provider's `iss` + `sub`, never by email: two accounts
 * that share an address at different providers stay two users (OpenID Connect Core 5.7).
 */
export async function recordSignIn(db: Db, identity: ProviderIdentity, now = Date.now()): Promise<User> {
  const fresh = {
    id: randomUUID(),
    issuer: identity.issuer,
    subject: identity.subject,
    email: identity.email ?? null,
    name: identity.name ?? null,
    created_at: now,
    last_login_at: now,
  };
  return db
    .insertInto('users')
    .values(fresh)
    .onConflict((conflict) =>
      conflict.columns(['issuer', 'subject']).doUpdateSet({ email: fresh.email, name: fresh.name, last_login_at: now }),
    )
    .returning(['id', 'issuer', 'subject', 'email', 'name'])
    .executeTakeFirstOrThrow();
}

/** Users with this email, most recent sign-in first; emails compare without case (RFC 5321 says domains do). */
export async function findUsersByEmail(db: Db, email: string): Promise<User[]> {
  return db
    .selectFrom('users')
    .select(['id', 'issuer', 'subject', 'email', 'name'])
    .where((eb) => eb(eb.fn('lower', ['email']), '=', email.toLowerCase()))
    .orderBy('last_login_at', 'desc')
    .execute();
}
