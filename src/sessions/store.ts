import type { KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { growingCapacity } from '../storage/capacity.js';
import { randomToken, sha256 } from '../crypto/tokens.js';
import type { Db } from '../storage/database.js';
import { noSharedCache, type SharedCache } from '../storage/shared-cache.js';
import { toUser, USER_COLUMNS, type User } from '../users/store.js';
import { open, seal } from './sealing.js';

export interface SessionLifetime {
  idleMs: number;
  maxMs: number;
}

export interface Session {
  user: User;
  idToken: string | null;
  expiresAt: number;
}

/** What a sign-in or a refresh hands the session. */
export interface SessionTokens {
  /** Absent only after a refresh whose response carried no ID token (allowed by Core 12.2). */
  idToken?: string;
  /** The ID token's `exp` in ms; after a refresh without one, when the grant is next to be checked. */
  idTokenExpiresAt: number;
  /** Absent when the provider issued none, or (on refresh) did not rotate it. */
  refreshToken?: string;
  /** The ID token's `sid` claim, for back-channel logout. */
  sid?: string;
}

/** What a refresh attempt came to; only 'refused' ends a session at once. */
export type RefreshOutcome =
  | { result: 'refreshed'; tokens: SessionTokens }
  /** The provider refused the grant (RFC 6749 5.2 `invalid_grant`) or sent an ID token that fails its checks. */
  | { result: 'refused' }
  /** The provider could not answer; the session may outlive its ID token by a grace period. */
  | { result: 'unavailable' };

/** Redeems a refresh token at the provider; implemented by src/oidc/refresh.ts. */
export interface TokenRefresher {
  refresh(refreshToken: string, user: User): Promise<RefreshOutcome>;
}

/** Tells every process that sessions ended; implemented by storage/revocations.ts. */
export interface SessionEndings {
  sessionsEnded(): Promise<void>;
}

/** Why a refresh ended a session, as the audit log records it. */
export type RefreshEndReason = 'refresh_failed' | 'refresh_unavailable';

/** What a store needs to refresh sessions; without it, sessions live by their timeouts alone. */
export interface SessionRefreshOptions {
  refresher: TokenRefresher;
  /** From `deriveSealingKey`; refresh tokens are stored sealed under it. */
  sealingKey: KeyObject;
  /** A session ended because its refresh failed; for the audit log. */
  onEnded?: (user: User, reason: RefreshEndReason) => void;
}

/**
 * How long a session read here is served without asking again. A session ended elsewhere is
 * announced to this process at once (storage/changes.ts); should the announcement be lost, this
 * keeps the promise that every process refuses it within 1 s.
 */
export const SESSION_CACHE_MS = 900;

/** A session as read from the database, and as cached between processes (never with the refresh token). */
interface SessionRow {
  id_token: string | null;
  last_seen_at: number;
  expires_at: number;
  /** Only for sessions holding a refresh token. */
  refresh?: { version: number; idTokenExpiresAt: number };
  user: User;
}

/** Writing last_seen_at on every request would turn each read into a write; a minute is precise enough. */
const TOUCH_INTERVAL_MS = 60_000;
/** Refreshing a little before the ID token expires keeps requests from ever meeting an expired one. */
const REFRESH_AHEAD_MS = 60_000;
/**
 * How long one process keeps a refresh to itself: longer than the provider request may take (10 s),
 * so a live claim is never taken over, and after a failure to reach the provider, how long until
 * the next attempt, so an outage is not met with a token request per page view.
 */
const REFRESH_CLAIM_MS = 30_000;
/** How long past its ID token's expiry a session survives a provider that cannot be reached. */
const UNAVAILABLE_GRACE_MS = 5 * 60_000;

/** Server-side sessions: the cookie holds a random id, the row holds who it is. */
export class SessionStore {
  /** One refresh per session in this process; concurrent lookups share its outcome. */
  private readonly refreshes = new Map<string, Promise<SessionRow | undefined>>();
  /**
   * Sessions read in the last SESSION_CACHE_MS, so a busy browser costs no database read per request;
   * a session ended by another process is refused here within that time, ended here at once.
   */
  private readonly local = new LRUCache<string, { row: SessionRow | null; version: string; fetchedAt: number }>(
    growingCapacity(20_000),
  );
  /**
   * Bumped whenever the held answers are dropped, so that a lookup in flight at that moment, which
   * may have read the row before the change, does not put its answer back.
   */
  private generation = 0;

  constructor(
    private readonly db: Db,
    private readonly lifetime: SessionLifetime,
    private readonly shared: SharedCache = noSharedCache,
    private readonly refreshing?: SessionRefreshOptions,
    private readonly endings?: SessionEndings,
  ) {}

  /**
   * Creates a session and returns the cookie value; the caller must end any session the browser had.
   * Without refresh options a refresh token is dropped, and the session lives by its timeouts alone.
   */
  async create(userId: string, tokens: SessionTokens | undefined, now = Date.now()): Promise<string> {
    const token = randomToken();
    const idHash = sha256(token);
    const key = this.refreshing?.sealingKey;
    await this.db
      .insertInto('sessions')
      .values({
        id_hash: idHash,
        user_id: userId,
        id_token: tokens?.idToken ?? null,
        created_at: now,
        last_seen_at: now,
        expires_at: now + this.lifetime.maxMs,
        refresh_token: key && tokens?.refreshToken ? seal(key, tokens.refreshToken, idHash) : null,
        refresh_token_version: 0,
        refresh_claimed_at: null,
        id_token_expires_at: tokens?.idTokenExpiresAt ?? null,
        sid: tokens?.sid ?? null,
      })
      .execute();
    return token;
  }

  /**
   * The live session for a cookie value, or undefined when unknown, idle too long, past its
   * lifetime, or refused by the provider at a refresh. A session holding a refresh token is
   * refreshed when its ID token is about to expire. One without keeps only the idle and absolute
   * timeouts: ending it with its ID token would sign people out every few minutes at providers
   * that issue 5-minute ID tokens, and the ID token's expiry says nothing about the user's account.
   */
  async find(token: string, now = Date.now()): Promise<Session | undefined> {
    const idHash = sha256(token);
    const { row: found, version } = await this.lookup(idHash, now);
    let row = found;
    if (!row) return undefined;
    if (now >= row.expires_at || now - row.last_seen_at >= this.lifetime.idleMs) {
      await this.db.deleteFrom('sessions').where('id_hash', '=', idHash).execute();
      await this.announceEnded();
      return undefined;
    }
    if (this.refreshing && row.refresh && row.refresh.idTokenExpiresAt - now < REFRESH_AHEAD_MS) {
      row = await this.refreshOnce(idHash, row, now);
      if (!row) return undefined;
    }
    if (now - row.last_seen_at >= TOUCH_INTERVAL_MS) {
      const generation = this.generation;
      await this.db.updateTable('sessions').set({ last_seen_at: now }).where('id_hash', '=', idHash).execute();
      const touched = { ...row, last_seen_at: now };
      if (generation === this.generation) this.local.set(idHash, { row: touched, version, fetchedAt: now });
      await this.shared.set('session', idHash, touched, version);
    }
    return { user: row.user, idToken: row.id_token, expiresAt: row.expires_at };
  }

  /** Drops every session answer held in this process; other processes' changes arrive this way. */
  forgetAll(): void {
    this.generation += 1;
    this.local.clear();
  }

  private async lookup(idHash: string, now: number): Promise<{ row: SessionRow | undefined; version: string }> {
    const cached = this.local.get(idHash);
    if (cached && now - cached.fetchedAt < SESSION_CACHE_MS)
      return { row: cached.row ?? undefined, version: cached.version };
    const generation = this.generation;
    const shared = await this.shared.get<SessionRow | null>('session', idHash);
    const row = shared.hit ? (shared.value ?? undefined) : await this.read(idHash);
    if (!shared.hit) await this.shared.set('session', idHash, row ?? null, shared.version);
    if (generation === this.generation)
      this.local.set(idHash, { row: row ?? null, version: shared.version, fetchedAt: now });
    return { row, version: shared.version };
  }

  /** After a refresh: the session lives on, but the answers held for it are out of date. */
  private async invalidate(): Promise<void> {
    this.forgetAll();
    await this.shared.invalidate('session');
  }

  /** Never fails: by now the session is gone from the database, and the database has announced it. */
  private async announceEnded(): Promise<void> {
    this.forgetAll();
    await (this.endings?.sessionsEnded() ?? this.shared.invalidate('session'));
  }

  private refreshOnce(idHash: string, row: SessionRow, now: number): Promise<SessionRow | undefined> {
    let pending = this.refreshes.get(idHash);
    if (!pending) {
      pending = this.refresh(idHash, row, now).finally(() => this.refreshes.delete(idHash));
      this.refreshes.set(idHash, pending);
    }
    return pending;
  }

  /**
   * Providers rotate refresh tokens and, seeing a rotated-away one again, revoke the whole grant
   * (RFC 9700 4.14.2), so two replicas must never redeem the same token. The row is claimed with an
   * update conditional on its version; a process that cannot claim it re-reads the row instead.
   */
  private async refresh(idHash: string, row: SessionRow, now: number): Promise<SessionRow | undefined> {
    const { refresher, sealingKey } = this.refreshing!;
    const version = row.refresh!.version;
    const claim = await this.db
      .updateTable('sessions')
      .set({ refresh_claimed_at: now })
      .where('id_hash', '=', idHash)
      .where('refresh_token_version', '=', version)
      .where((eb) =>
        eb.or([eb('refresh_claimed_at', 'is', null), eb('refresh_claimed_at', '<=', now - REFRESH_CLAIM_MS)]),
      )
      .returning('refresh_token')
      .executeTakeFirst();
    if (!claim) return this.rereadAfterLostClaim(idHash, now);

    const refreshToken = claim.refresh_token ? open(sealingKey, claim.refresh_token, idHash) : undefined;
    // A token sealed under a previous server secret cannot be opened: like a refused refresh, sign in again.
    const outcome: RefreshOutcome = refreshToken
      ? await refresher.refresh(refreshToken, row.user).catch((): RefreshOutcome => ({ result: 'unavailable' }))
      : { result: 'refused' };

    if (outcome.result === 'refused') return this.endAfterRefresh(idHash, version, row.user, 'refresh_failed');
    if (outcome.result === 'unavailable') {
      // The claim stays in place, so no process asks the provider again for REFRESH_CLAIM_MS.
      if (now < row.refresh!.idTokenExpiresAt + UNAVAILABLE_GRACE_MS) return row;
      return this.endAfterRefresh(idHash, version, row.user, 'refresh_unavailable');
    }

    const { tokens } = outcome;
    const updated = await this.db
      .updateTable('sessions')
      .set({
        id_token: tokens.idToken ?? row.id_token,
        id_token_expires_at: tokens.idTokenExpiresAt,
        refresh_token: tokens.refreshToken ? seal(sealingKey, tokens.refreshToken, idHash) : claim.refresh_token,
        refresh_token_version: version + 1,
        refresh_claimed_at: null,
        ...(tokens.sid ? { sid: tokens.sid } : {}),
      })
      .where('id_hash', '=', idHash)
      .where('refresh_token_version', '=', version)
      .executeTakeFirst();
    await this.invalidate();
    // Nothing updated: the session was ended meanwhile (sign-out, back-channel logout, user disabled).
    if (Number(updated.numUpdatedRows) === 0) return this.read(idHash);
    return {
      ...row,
      id_token: tokens.idToken ?? row.id_token,
      refresh: { version: version + 1, idTokenExpiresAt: tokens.idTokenExpiresAt },
    };
  }

  /**
   * Another process refreshed (the row is fresh), is refreshing, or is waiting out a provider
   * outage. The row as it stands serves this request while its ID token is within the grace; past
   * it, the request is refused but the row is left to the process holding the claim to end.
   */
  private async rereadAfterLostClaim(idHash: string, now: number): Promise<SessionRow | undefined> {
    const current = await this.read(idHash);
    if (!current?.refresh || current.refresh.idTokenExpiresAt - now >= REFRESH_AHEAD_MS) return current;
    return now < current.refresh.idTokenExpiresAt + UNAVAILABLE_GRACE_MS ? current : undefined;
  }

  private async endAfterRefresh(
    idHash: string,
    version: number,
    user: User,
    reason: RefreshEndReason,
  ): Promise<SessionRow | undefined> {
    const ended = await this.db
      .deleteFrom('sessions')
      .where('id_hash', '=', idHash)
      .where('refresh_token_version', '=', version)
      .executeTakeFirst();
    await this.announceEnded();
    if (Number(ended.numDeletedRows) === 0) return this.read(idHash);
    this.refreshing?.onEnded?.(user, reason);
    return undefined;
  }

  private async read(idHash: string): Promise<SessionRow | undefined> {
    const row = await this.db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select([
        'sessions.id_token',
        'sessions.last_seen_at',
        'sessions.expires_at',
        'sessions.refresh_token',
        'sessions.refresh_token_version',
        'sessions.id_token_expires_at',
        ...USER_COLUMNS,
      ])
      .where('sessions.id_hash', '=', idHash)
      .where('users.disabled_at', 'is', null)
      .executeTakeFirst();
    if (!row) return undefined;
    const { id_token, last_seen_at, expires_at, refresh_token, refresh_token_version, id_token_expires_at, ...user } =
      row;
    return {
      id_token,
      last_seen_at: Number(last_seen_at),
      expires_at: Number(expires_at),
      ...(refresh_token !== null && id_token_expires_at !== null
        ? { refresh: { version: Number(refresh_token_version), idTokenExpiresAt: Number(id_token_expires_at) } }
        : {}),
      user: toUser(user),
    };
  }

  /** Ends the session behind a cookie value; returns its ID token for the provider's logout. */
  async end(token: string): Promise<string | null | undefined> {
    const row = await this.db
      .deleteFrom('sessions')
      .where('id_hash', '=', sha256(token))
      .returning('id_token')
      .executeTakeFirst();
    await this.announceEnded();
    return row?.id_token;
  }

  /**
   * Ends the sessions a provider names in a back-channel logout (Back-Channel Logout 1.0 section
   * 2.7): the one with `sid` when given, else every session of `subject`, only ever of users of
   * `issuer`. Returns the users whose sessions ended.
   */
  async endByProvider(issuer: string, match: { subject?: string; sid?: string }): Promise<User[]> {
    const { subject, sid } = match;
    if (subject === undefined && sid === undefined) return [];
    let query = this.db.deleteFrom('sessions').where((eb) => {
      let users = eb.selectFrom('users').select('users.id').where('users.issuer', '=', issuer);
      if (subject !== undefined) users = users.where('users.subject', '=', subject);
      return eb('user_id', 'in', users);
    });
    if (sid !== undefined) query = query.where('sid', '=', sid);
    const ended = await query.returning('user_id').execute();
    await this.announceEnded();
    const userIds = [...new Set(ended.map((row) => row.user_id))];
    if (userIds.length === 0) return [];
    const users = await this.db.selectFrom('users').select(USER_COLUMNS).where('users.id', 'in', userIds).execute();
    return users.map(toUser);
  }

  /** Removes rows that can no longer be used; run periodically. */
  async purgeExpired(now = Date.now()): Promise<void> {
    await this.db
      .deleteFrom('sessions')
      .where((eb) => eb.or([eb('expires_at', '<=', now), eb('last_seen_at', '<=', now - this.lifetime.idleMs)]))
      .execute();
  }
}

/** Sessions not yet expired, for the active-sessions gauge. */
export async function countActiveSessions(db: Db, now = Date.now()): Promise<number> {
  const row = await db
    .selectFrom('sessions')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('expires_at', '>', now)
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}
