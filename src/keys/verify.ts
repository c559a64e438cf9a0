import { timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { accountDisabled, AuthError } from '../errors.js';
import { sha256 } from '../crypto/tokens.js';
import { growingCapacity } from '../storage/capacity.js';
import { noSharedCache, type SharedCache } from '../storage/shared-cache.js';
import type { User } from '../users/store.js';
import { DEFAULT_CONTROLS } from './controls.js';
import { isWellFormedApiKey } from './format.js';
import type { ApiKeyRecord, ApiKeyStore } from './store.js';

/**
 * A cached answer is served as is while younger than this, refreshed in the background until
 * MAX_STALE_MS, and re-read before answering after that: under steady traffic a valid key costs no
 * database read on the request path. A revocation made by another process is announced to this one
 * at once (storage/changes.ts); should the announcement be lost, it is still seen within 1 s.
 */
export const KEY_CACHE_FRESH_MS = 500;
export const MAX_STALE_MS = 1_000;
/** Bounds memory whatever an attacker sends; each entry is about 200 bytes. */
const CACHE_ENTRIES = 50_000;
/** last_used_at is informational; a minute of precision spares a write per request. */
const LAST_USED_PRECISION_MS = 60_000;

interface CachedLookup {
  record: ApiKeyRecord | undefined;
  fetchedAt: number;
}

export interface StaticKey {
  token: string;
  user: User;
}

export const TEST_TOKEN_KEY_ID = 'test_token';

/** What verification reports for metrics; it never sees a key. */
export interface VerificationObserver {
  verified(result: string): void;
  cacheLookup(hit: boolean): void;
}

const unobserved: VerificationObserver = { verified: () => undefined, cacheLookup: () => undefined };

/**
 * Verifies API keys: a new key's shape and checksum before anything else, then an in-memory cache,
 * then the database. A key seen before is known to be well formed and skips straight to the cache.
 */
export class ApiKeyVerifier {
  private readonly cache = new LRUCache<string, CachedLookup>(growingCapacity(CACHE_ENTRIES));
  private readonly refreshing = new Set<string>();
  private readonly hashes = new LRUCache<string, string>(growingCapacity(CACHE_ENTRIES));
  private readonly lastUseWritten = new LRUCache<string, number>(growingCapacity(CACHE_ENTRIES));
  private readonly pendingUse = new Map<string, number>();
  private flushScheduled = false;
  /** Bumped by every forgetAll, so lookups in flight at that moment are not cached. */
  private generation = 0;
  private readonly staticKeyDigest: Buffer | undefined;

  constructor(
    private readonly store: ApiKeyStore,
    private readonly prefix: string,
    private readonly staticKey?: StaticKey,
    private readonly shared: SharedCache = noSharedCache,
    private readonly observer: VerificationObserver = unobserved,
  ) {
    this.staticKeyDigest = staticKey ? Buffer.from(sha256(staticKey.token)) : undefined;
  }

  /** The key's record if it may be used now; otherwise an AuthError saying why, never echoing the key. */
  async verify(candidate: string, now = Date.now()): Promise<ApiKeyRecord> {
    try {
      const record = await this.check(candidate, now);
      this.observer.verified('valid');
      return record;
    } catch (error) {
      this.observer.verified((error as { code?: string }).code ?? 'error');
      throw error;
    }
  }

  private async check(candidate: string, now: number): Promise<ApiKeyRecord> {
    if (this.staticKey && this.isStaticKey(candidate)) {
      return {
        id: TEST_TOKEN_KEY_ID,
        expires_at: null,
        revoked_at: null,
        controls: DEFAULT_CONTROLS,
        user: this.staticKey.user,
      };
    }
    const hash = this.hashes.get(candidate) ?? this.hashOf(candidate);
    const record = await this.lookup(hash, now);
    if (!record) throw unknownKey();
    if (record.revoked_at !== null) {
      throw new AuthError('revoked_api_key', 'This API key has been revoked. Create a new one at /v1/auth/account.');
    }
    if (record.expires_at !== null && record.expires_at <= now) {
      throw new AuthError(
        'expired_api_key',
        `This API key expired on ${new Date(record.expires_at).toISOString()}. Create a new one at /v1/auth/account.`,
      );
    }
    if (record.user.disabled) throw accountDisabled();
    this.noteUse(record.id, now);
    return record;
  }

  /** Drops every cached answer so a revocation in this process takes effect on the next request. */
  forgetAll(): void {
    this.generation += 1;
    this.cache.clear();
  }

  /** Writes pending last-used times; called on shutdown so none are lost. */
  async flush(): Promise<void> {
    if (this.pendingUse.size === 0) return;
    const batch = new Map(this.pendingUse);
    this.pendingUse.clear();
    await this.store.recordUse(batch);
  }

  private isStaticKey(candidate: string): boolean {
    return timingSafeEqual(Buffer.from(sha256(candidate)), this.staticKeyDigest!);
  }

  /**
   * HMAC and the checksum are the largest costs of a cached verification; a key seen before (and
   * so known to be well formed) skips both.
   */
  private hashOf(candidate: string): string {
    if (!isWellFormedApiKey(candidate, this.prefix)) throw unknownKey();
    const hash = this.store.hash(candidate);
    this.hashes.set(candidate, hash);
    return hash;
  }

  private async lookup(hash: string, now: number): Promise<ApiKeyRecord | undefined> {
    const cached = this.cache.get(hash);
    const age = cached ? now - cached.fetchedAt : Infinity;
    this.observer.cacheLookup(age < MAX_STALE_MS);
    if (cached && age < KEY_CACHE_FRESH_MS) return cached.record;
    if (cached && age < MAX_STALE_MS) {
      this.refreshInBackground(hash);
      return cached.record;
    }
    return this.fetch(hash, now);
  }

  private async fetch(hash: string, now: number): Promise<ApiKeyRecord | undefined> {
    const generation = this.generation;
    const lookup = await this.shared.get<ApiKeyRecord | null>('key', hash);
    const record = lookup.hit ? (lookup.value ?? undefined) : await this.store.findByHash(hash);
    if (!lookup.hit) await this.shared.set('key', hash, record ?? null, lookup.version);
    // A read that began before a revocation must not put the pre-revocation answer back.
    if (generation === this.generation) this.cache.set(hash, { record, fetchedAt: now });
    return record;
  }

  private refreshInBackground(hash: string): void {
    if (this.refreshing.has(hash)) return;
    this.refreshing.add(hash);
    void this.fetch(hash, Date.now())
      // A failed refresh leaves the entry to age out; the next request past MAX_STALE_MS reads again.
      .catch(() => undefined)
      .finally(() => this.refreshing.delete(hash));
  }

  private noteUse(keyId: string, now: number): void {
    if (now - (this.lastUseWritten.get(keyId) ?? 0) < LAST_USED_PRECISION_MS) return;
    this.lastUseWritten.set(keyId, now);
    this.pendingUse.set(keyId, now);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      void this.flush().catch(() => undefined);
    });
  }
}

function unknownKey(): AuthError {
  return new AuthError(
    'invalid_api_key',
    'Incorrect API key provided. You can find or create API keys at /v1/auth/account.',
  );
}
