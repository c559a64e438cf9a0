import { randomToken, sha256 } from '../crypto/tokens.js';
import type { Db } from '../storage/database.js';
import { toUser, USER_COLUMNS, type User } from '../users/store.js';

export interface SessionLifetime {
  idleMs: number;
  maxMs: number;
}

export interface Session {
  user: User;
  idToken: string | null;
  expiresAt: number;
}

/** Writing last_seen_at on every request would turn each read into a write; a minute is precise enough. */
const TOUCH_INTERVAL_MS = 60_000;

/** Server-side sessions: the cookie holds a random id, the row holds who it is. */
export class SessionStore {
  constructor(
    private readonly db: Db,
    private readonly lifetime: SessionLifetime,
  ) {}

  /** Creates a session and returns the cookie value; the caller must end any session the browser had. */
  async create(userId: string, idToken: string | undefined, now = Date.now()): Promise<string> {
    const token = randomToken();
    await this.db
      .insertInto('sessions')
      .values({
        id_hash: sha256(token),
        user_id: userId,
        id_token: idToken ?? null,
        created_at: now,
        last_seen_at: now,
        expires_at: now + this.lifetime.maxMs,
      })
      .execute();
    return token;
  }

  /** The live session for a cookie value, or undefined when unknown, idle too long or past its lifetime. */
  async find(token: string, now = Date.now()): Promise<Session | undefined> {
    const idHash = sha256(token);
    const row = await this.db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select(['sessions.id_token', 'sessions.last_seen_at', 'sessions.expires_at', ...USER_COLUMNS])
      .where('sessions.id_hash', '=', idHash)
      .where('users.disabled_at', 'is', null)
      .executeTakeFirst();
    if (!row) return undefined;
    const lastSeen = Number(row.last_seen_at);
    const expiresAt = Number(row.expires_at);
    if (now >= expiresAt || now - lastSeen >= this.lifetime.idleMs) {
      await this.db.deleteFrom('sessions').where('id_hash', '=', idHash).execute();
      return undefined;
    }
    if (now - lastSeen >= TOUCH_INTERVAL_MS) {
      await this.db.updateTable('sessions').set({ last_seen_at: now }).where('id_hash', '=', idHash).execute();
    }
    const { id_token: idToken, last_seen_at: _lastSeen, expires_at: _expires, ...user } = row;
    return { user: toUser(user), idToken, expiresAt };
  }

  /** Ends the session behind a cookie value; returns its ID token for the provider's logout. */
  async end(token: string): Promise<string | null | undefined> {
    const row = await this.db
      .deleteFrom('sessions')
      .where('id_hash', '=', sha256(token))
      .returning('id_token')
      .executeTakeFirst();
    return row?.id_token;
  }

  /** Removes rows that can no longer be used; run periodically. */
  async purgeExpired(now = Date.now()): Promise<void> {
    await this.db
      .deleteFrom('sessions')
      .where((eb) => eb.or([eb('expires_at', '<=', now), eb('last_seen_at', '<=', now - this.lifetime.idleMs)]))
      .execute();
    await this.db.deleteFrom('login_flows').where('expires_at', '<=', now).execute();
  }
}
