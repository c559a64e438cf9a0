import { randomBytes, randomInt } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { hashApiKey } from '../keys/hash-secret.js';
import { open, seal } from '../sessions/sealing.js';
import type { Db } from '../storage/database.js';

/**
 * RFC 8628 6.1: 20 consonants, no vowels (no words spelt by chance) and none that read alike
 * (no 0/O, 1/I). Eight of them give 20^8 = 2.56e10 codes, typed as XXXX-XXXX.
 */
export const USER_CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';
export const USER_CODE_LENGTH = 8;
/** RFC 8628 3.5: each slow_down adds five seconds to the interval a client must keep. */
const SLOW_DOWN_STEP_SECONDS = 5;

export interface DeviceRequest {
  clientId: string;
  deviceName: string | null;
  scopes: string[];
  clientAddress: string;
  createdAt: number;
  expiresAt: number;
}

export interface StartedDeviceRequest {
  deviceCode: string;
  /** As shown: XXXX-XXXX. */
  userCode: string;
  expiresAt: number;
}

/** What a poll finds, in RFC 8628 3.5's words; `invalid_grant` for an unknown or already used device code. */
export type PollResult =
  | { state: 'authorization_pending' | 'slow_down' | 'access_denied' | 'expired_token' | 'invalid_grant' }
  | { state: 'approved'; key: string; keyId: string };

/** The user code as typed, uppercased with everything but letters dropped (a hyphen, spaces). */
export function normaliseUserCode(typed: string): string {
  return typed.toUpperCase().replace(/[^A-Z]/g, '');
}

function generateUserCode(): string {
  let code = '';
  for (let i = 0; i < USER_CODE_LENGTH; i++) code += USER_CODE_ALPHABET[randomInt(USER_CODE_ALPHABET.length)];
  return `${code.slice(0, 4)}-${code.slice(4)}`;
}

/**
 * The device_authorizations table: sign-ins from the command line in progress. Both codes are
 * stored as HMACs under the server secret: a user code has only 35 bits, which a plain hash of a
 * stolen database would give up in minutes. The API key an approval creates is sealed in the row
 * until the program collects it, once.
 */
export class DeviceStore {
  constructor(
    private readonly db: Db,
    private readonly hashSecret: string,
    private readonly sealingKey: KeyObject,
  ) {}

  private hashOf(kind: 'device_code' | 'user_code', code: string): string {
    return hashApiKey(this.hashSecret, `${kind}:${code}`);
  }

  async start(
    request: Omit<DeviceRequest, 'createdAt' | 'expiresAt'>,
    lifetimeMs: number,
    intervalSeconds: number,
    now = Date.now(),
  ): Promise<StartedDeviceRequest> {
    const deviceCode = randomBytes(32).toString('base64url');
    const expiresAt = now + lifetimeMs;
    // A clash with a live user code is 1 in 2.56e10 per live code; the unique index turns it into a retry.
    for (let attempt = 0; ; attempt++) {
      const userCode = generateUserCode();
      try {
        await this.db
          .insertInto('device_authorizations')
          .values({
            device_code_hash: this.hashOf('device_code', deviceCode),
            user_code_hash: this.hashOf('user_code', normaliseUserCode(userCode)),
            client_id: request.clientId,
            device_name: request.deviceName,
            scopes: JSON.stringify(request.scopes),
            client_address: request.clientAddress,
            created_at: now,
            expires_at: expiresAt,
            interval_seconds: intervalSeconds,
            last_polled_at: null,
            status: 'pending',
            user_id: null,
            key_id: null,
            sealed_key: null,
          })
          .execute();
        return { deviceCode, userCode, expiresAt };
      } catch (error) {
        if (attempt >= 2) throw error;
      }
    }
  }

  /** The request waiting for approval under this user code, if it is still waiting. */
  async findPending(userCode: string, now = Date.now()): Promise<DeviceRequest | undefined> {
    const row = await this.db
      .selectFrom('device_authorizations')
      .select(['client_id', 'device_name', 'scopes', 'client_address', 'created_at', 'expires_at'])
      .where('user_code_hash', '=', this.hashOf('user_code', normaliseUserCode(userCode)))
      .where('status', '=', 'pending')
      .where('expires_at', '>', now)
      .executeTakeFirst();
    if (!row) return undefined;
    return {
      clientId: row.client_id,
      deviceName: row.device_name,
      scopes: JSON.parse(row.scopes) as string[],
      clientAddress: row.client_address,
      createdAt: Number(row.created_at),
      expiresAt: Number(row.expires_at),
    };
  }

  /**
   * Moves a waiting request to `approved` or `denied` for `userId`; false when it was no longer
   * waiting (decided in another tab, expired). Conditional, so two decisions cannot both win.
   */
  async decide(userCode: string, userId: string, status: 'approved' | 'denied', now = Date.now()): Promise<boolean> {
    const result = await this.db
      .updateTable('device_authorizations')
      .set({ status, user_id: userId })
      .where('user_code_hash', '=', this.hashOf('user_code', normaliseUserCode(userCode)))
      .where('status', '=', 'pending')
      .where('expires_at', '>', now)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  /** Puts an approval back to waiting when its key could not be made, so the person may try again. */
  async reopen(userCode: string): Promise<void> {
    await this.db
      .updateTable('device_authorizations')
      .set({ status: 'pending', user_id: null })
      .where('user_code_hash', '=', this.hashOf('user_code', normaliseUserCode(userCode)))
      .where('status', '=', 'approved')
      .where('sealed_key', 'is', null)
      .execute();
  }

  /** Keeps the approved request's new key, sealed, for the program's next poll. */
  async attachKey(userCode: string, keyId: string, key: string): Promise<void> {
    const userCodeHash = this.hashOf('user_code', normaliseUserCode(userCode));
    const row = await this.db
      .selectFrom('device_authorizations')
      .select('device_code_hash')
      .where('user_code_hash', '=', userCodeHash)
      .executeTakeFirstOrThrow();
    await this.db
      .updateTable('device_authorizations')
      .set({ key_id: keyId, sealed_key: seal(this.sealingKey, key, `device:${row.device_code_hash}`) })
      .where('user_code_hash', '=', userCodeHash)
      .execute();
  }

  /**
   * One poll of the token endpoint (RFC 8628 3.4, 3.5). Polling sooner than the interval answers
   * slow_down and lengthens it. An approved key is handed out once: the row becomes `delivered`
   * in the same conditional update that takes the sealed key out, so a replayed device code gets nothing.
   */
  async poll(deviceCode: string, now = Date.now()): Promise<PollResult> {
    const deviceCodeHash = this.hashOf('device_code', deviceCode);
    const row = await this.db
      .selectFrom('device_authorizations')
      .select(['status', 'expires_at', 'interval_seconds', 'last_polled_at', 'key_id', 'sealed_key'])
      .where('device_code_hash', '=', deviceCodeHash)
      .executeTakeFirst();
    if (!row || row.status === 'delivered') return { state: 'invalid_grant' };
    if (Number(row.expires_at) <= now) return { state: 'expired_token' };
    const lastPolledAt = row.last_polled_at === null ? null : Number(row.last_polled_at);
    const tooSoon = lastPolledAt !== null && now - lastPolledAt < row.interval_seconds * 1000;
    await this.db
      .updateTable('device_authorizations')
      .set({
        last_polled_at: now,
        interval_seconds: tooSoon ? row.interval_seconds + SLOW_DOWN_STEP_SECONDS : row.interval_seconds,
      })
      .where('device_code_hash', '=', deviceCodeHash)
      .execute();
    if (tooSoon) return { state: 'slow_down' };
    if (row.status === 'denied') return { state: 'access_denied' };
    if (row.status !== 'approved' || row.sealed_key === null || row.key_id === null) {
      return { state: 'authorization_pending' };
    }
    const taken = await this.db
      .updateTable('device_authorizations')
      .set({ status: 'delivered', sealed_key: null })
      .where('device_code_hash', '=', deviceCodeHash)
      .where('status', '=', 'approved')
      .executeTakeFirst();
    if (Number(taken.numUpdatedRows) !== 1) return { state: 'invalid_grant' };
    const key = open(this.sealingKey, row.sealed_key, `device:${deviceCodeHash}`);
    return key === undefined ? { state: 'invalid_grant' } : { state: 'approved', key, keyId: row.key_id };
  }

  /** Drops requests an hour past their expiry; until then a replayed device code is told it expired. */
  async purgeExpired(now = Date.now()): Promise<void> {
    await this.db
      .deleteFrom('device_authorizations')
      .where('expires_at', '<', now - 3_600_000)
      .execute();
  }
}
