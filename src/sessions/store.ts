import { randomToken, sha256 } from '../crypto/tokens.js';
import type { Db } from '../storage/database.js';
import { noSharedCache, type SharedCache } from '../storage/shared-cache.js';
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

/** A session as read from the database, and as cached between processes. */
interface SessionRow {
  id_token: string | null;
  last_seen_at: number;
  expires_at: number;
  user: User;
}

/** Writing last_seen_at on every request would turn each read into a write; a minute is precise enough. */
const TOUCH_INTERVAL_MS = 60_000;

/** Server-side sessions: the cookie holds a random id, the row holds who it is. */
export class SessionStore {
  constructor(
    private readonly db: Db,
    private readonly lifetime: SessionLifetime,
    private readonly shared: SharedCache = noSharedCache,
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
    const lookup = await this.shared.get<SessionRow | null>('session', idHash);
    const row = lookup.hit ? (lookup.value ?? undefined) : await this.read(idHash);
    if (!lookup.hit) await this.shared.set('session', idHash, row ?? null, lookup.version);
    if (!row) return undefined;
    if (now >= row.expires_at || now - row.last_seen_at >= this.lifetime.idleMs) {
      await this.db.deleteFrom('sessions').where('id_hash', '=', idHash).execute();
      await this.shared.invalidate('session');
      return undefined;
    }
    if (now - row.last_seen_at >= TOUCH_INTERVAL_MS) {
      await this.db.updateTable('sessions').set({ last_seen_at: now }).where('id_hash', '=', idHash).execute();
      await this.shared.set('session', idHash, { ...row, last_seen_at: now }, lookup.version);
    }
    return { user: row.user, idToken: row.id_token, expiresAt: row.expires_at };
  }

  private async read(idHash: string): Promise<SessionRow | undefined> {
    const row = await this.db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select(['sessions.id_token', 'sessions.last_seen_at', 'sessions.expires_at', ...USER_COLUMNS])
      .where('sessions.id_hash', '=', idHash)
      .where('users.disabled_at', 'is', null)
      .executeTakeFirst();
    if (!row) return undefined;
    const { id_token, last_seen_at, expires_at, ...user } = row;
    return { id_token, last_seen_at: Number(last_seen_at), expires_at: Number(expires_at), user: toUser(user) };
  }

  /** Ends the session behind a cookie value; returns its ID token for the provider's logout. */
  async end(token: string): Promise<string | null | undefined> {
    const row = await this.db
      .deleteFrom('sessions')
      .where('id_hash', '=', sha256(token))
      .returning('id_token')
      .executeTakeFirst();
    await this.shared.invalidate('session');
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
