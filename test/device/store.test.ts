import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceStore, normaliseUserCode, USER_CODE_ALPHABET } from '../../src/device/store.js';
import { deriveSealingKey } from '../../src/sessions/sealing.js';
import { openStorage, type Storage } from '../../src/storage/database.js';
import { testDatabase } from '../support/stack.js';

const SECRET = 'device-store-test-secret-of-enough-length';
const LIFETIME_MS = 600_000;
const REQUEST = { clientId: 'gatehouse-cli', deviceName: 'laptop', scopes: ['inference'], clientAddress: '192.0.2.7' };

describe('DeviceStore', () => {
  let storage: Storage;
  let store: DeviceStore;
  beforeAll(async () => {
    storage = await openStorage(testDatabase() as { url: string });
    store = new DeviceStore(storage.db, SECRET, deriveSealingKey(SECRET));
  });
  afterAll(() => storage.close());

  const start = (now = 1_000_000) => store.start(REQUEST, LIFETIME_MS, 5, now);

  it('makes user codes of eight letters from the 20-letter alphabet, typed as XXXX-XXXX', async () => {
    const codes = await Promise.all(Array.from({ length: 20 }, () => start()));
    for (const { userCode } of codes) {
      expect(userCode).toMatch(new RegExp(`^[${USER_CODE_ALPHABET}]{4}-[${USER_CODE_ALPHABET}]{4}$`));
    }
    expect(new Set(codes.map((code) => code.userCode)).size).toBe(20);
    expect(normaliseUserCode(' bcdf ghjk ')).toBe('BCDFGHJK');
  });

  it('stores neither code in the clear', async () => {
    const { deviceCode, userCode } = await start();
    const rows = await storage.db.selectFrom('device_authorizations').selectAll().execute();
    const dump = JSON.stringify(rows);
    expect(dump).not.toContain(deviceCode);
    expect(dump).not.toContain(normaliseUserCode(userCode));
  });

  it('answers authorization_pending, then slow_down to a poll within the interval, which grows by 5 s', async () => {
    const { deviceCode } = await start(0);
    expect(await store.poll(deviceCode, 1_000)).toEqual({ state: 'authorization_pending' });
    expect(await store.poll(deviceCode, 3_000)).toEqual({ state: 'slow_down' });
    // The interval is now 10 s from the last poll (at 3 s).
    expect(await store.poll(deviceCode, 12_000)).toEqual({ state: 'slow_down' });
    expect(await store.poll(deviceCode, 32_000)).toEqual({ state: 'authorization_pending' });
  });

  it('answers expired_token once the code has expired, and finds no request to approve', async () => {
    const { deviceCode, userCode } = await start(0);
    expect(await store.findPending(userCode, LIFETIME_MS + 1)).toBeUndefined();
    expect(await store.decide(userCode, 'someone', 'approved', LIFETIME_MS + 1)).toBe(false);
    expect(await store.poll(deviceCode, LIFETIME_MS + 1)).toEqual({ state: 'expired_token' });
  });

  it('answers access_denied after a denial', async () => {
    const { deviceCode, userCode } = await start(0);
    expect(await store.decide(userCode, 'someone', 'denied', 1_000)).toBe(true);
    expect(await store.decide(userCode, 'someone', 'approved', 1_000)).toBe(false);
    expect(await store.poll(deviceCode, 2_000)).toEqual({ state: 'access_denied' });
  });

  it('hands an approved key out once; the device code is then spent', async () => {
    const { deviceCode, userCode } = await start(0);
    expect(await store.decide(userCode, 'someone', 'approved', 1_000)).toBe(true);
    expect(await store.poll(deviceCode, 2_000)).toEqual({ state: 'authorization_pending' });
    await store.attachKey(userCode, 'key_1', 'gth_secret');
    expect(await store.poll(deviceCode, 10_000)).toEqual({ state: 'approved', key: 'gth_secret', keyId: 'key_1' });
    expect(await store.poll(deviceCode, 20_000)).toEqual({ state: 'invalid_grant' });
    const [row] = await storage.db
      .selectFrom('device_authorizations')
      .select('sealed_key')
      .where('key_id', '=', 'key_1')
      .execute();
    expect(row?.sealed_key).toBeNull();
  });

  it('answers invalid_grant for a device code it never made', async () => {
    expect(await store.poll('made-up', 1_000)).toEqual({ state: 'invalid_grant' });
  });
});
