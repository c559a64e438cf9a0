import { DEFAULT_CONTROLS } from '../../src/keys/controls.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuthError } from '../../src/errors.js';
import { generateApiKey } from '../../src/keys/format.js';
import { ApiKeyStore, type ApiKeyRecord } from '../../src/keys/store.js';
import { ApiKeyVerifier, TEST_TOKEN_KEY_ID } from '../../src/keys/verify.js';
import { openStorage, type Storage } from '../../src/storage/database.js';
import { recordSignIn, type User } from '../../src/users/store.js';

const PREFIX = 'gth_';
const SECRET = 'unit-test-hash-secret-of-32-chars!';

let storage: Storage;
let store: ApiKeyStore;
let owner: User;
/** Every findByHash the verifier made: the database reads on the request path and in the background. */
let reads: number;

beforeEach(async () => {
  storage = await openStorage('sqlite::memory:');
  store = new ApiKeyStore(storage.db, SECRET, PREFIX);
  owner = await recordSignIn(storage.db, {
    issuer: 'https://id.example.test',
    subject: 'owner-1',
    email: 'o@example.test',
  });
  reads = 0;
  const findByHash = store.findByHash.bind(store);
  store.findByHash = (hash: string) => {
    reads += 1;
    return findByHash(hash);
  };
});
afterEach(() => storage.close());

/** Resolves once pending background work (refreshes, last-used writes) has had a chance to run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

async function expectAuthError(promise: Promise<unknown>, code: string): Promise<AuthError> {
  const error = await promise.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(AuthError);
  expect((error as AuthError).code).toBe(code);
  expect((error as AuthError).status).toBe(401);
  return error as AuthError;
}

describe('ApiKeyVerifier', () => {
  it('accepts a valid key as its owner', async () => {
    const created = await store.create(owner, 'laptop', null);
    const record = await new ApiKeyVerifier(store, PREFIX).verify(created.key);
    expect(record.id).toBe(created.id);
    expect(record.user).toEqual(owner);
  });

  it('reads the database once for a valid key verified twice', async () => {
    const created = await store.create(owner, 'laptop', null);
    const verifier = new ApiKeyVerifier(store, PREFIX);
    const now = Date.now();
    await verifier.verify(created.key, now);
    await verifier.verify(created.key, now + 100);
    await settle();
    expect(reads).toBe(1);
  });

  it('remembers an unknown well-formed key too, so guessing costs no extra reads', async () => {
    const verifier = new ApiKeyVerifier(store, PREFIX);
    const unknown = generateApiKey(PREFIX);
    const now = Date.now();
    await expectAuthError(verifier.verify(unknown, now), 'invalid_api_key');
    await expectAuthError(verifier.verify(unknown, now + 100), 'invalid_api_key');
    await settle();
    expect(reads).toBe(1);
  });

  it('never reads the database for a malformed key', async () => {
    const verifier = new ApiKeyVerifier(store, PREFIX);
    const valid = generateApiKey(PREFIX);
    const last = valid.at(-1) === 'A' ? 'B' : 'A';
    const malformed = [
      '',
      'not-a-key',
      valid.slice(0, -1) + last,
      valid.slice(0, -1),
      `xyz_${valid.slice(4)}`,
      'sk-proj-0123456789abcdefghijklmnopqrstuvwxyz',
      'x'.repeat(8192),
    ];
    for (const candidate of malformed) await expectAuthError(verifier.verify(candidate), 'invalid_api_key');
    expect(reads).toBe(0);
  });

  it('reads again once the cached answer is older than a second', async () => {
    const created = await store.create(owner, 'laptop', null);
    const verifier = new ApiKeyVerifier(store, PREFIX);
    const now = Date.now();
    await verifier.verify(created.key, now);
    await verifier.verify(created.key, now + 1_001);
    expect(reads).toBe(2);
  });

  it('answers from the cache between half a second and a second, refreshing in the background', async () => {
    const created = await store.create(owner, 'laptop', null);
    const verifier = new ApiKeyVerifier(store, PREFIX);
    const now = Date.now();
    await verifier.verify(created.key, now);
    await verifier.verify(created.key, now + 600);
    await verifier.verify(created.key, now + 650);
    await settle();
    expect(reads).toBe(2);
  });

  it('says revoked for a revoked key, and sees a revocation in this process at once after forgetAll', async () => {
    const created = await store.create(owner, 'laptop', null);
    const verifier = new ApiKeyVerifier(store, PREFIX);
    await verifier.verify(created.key);
    expect(await store.revoke(created.id, owner.id)).toBe(true);
    verifier.forgetAll();
    const error = await expectAuthError(verifier.verify(created.key), 'revoked_api_key');
    expect(error.message).toMatch(/revoked/);
    expect(error.message).not.toContain(created.key);
  });

  it('sees a revocation by another process within a second, without forgetAll', async () => {
    const created = await store.create(owner, 'laptop', null);
    const verifier = new ApiKeyVerifier(store, PREFIX);
    const now = Date.now();
    await verifier.verify(created.key, now);
    await store.revoke(created.id, undefined);
    await expectAuthError(verifier.verify(created.key, now + 1_000), 'revoked_api_key');
  });

  it('says expired, with the date, for a key past its expiry', async () => {
    const now = Date.now();
    const created = await store.create(owner, 'old', now - 60_000, now - 120_000);
    const error = await expectAuthError(new ApiKeyVerifier(store, PREFIX).verify(created.key, now), 'expired_api_key');
    expect(error.message).toContain(new Date(now - 60_000).toISOString());
    expect(error.message).not.toContain(created.key);
  });

  it('lets a key through until its expiry and refuses it from then on, cache or not', async () => {
    const now = Date.now();
    const created = await store.create(owner, 'short', now + 300, now);
    const verifier = new ApiKeyVerifier(store, PREFIX);
    await verifier.verify(created.key, now + 299);
    await expectAuthError(verifier.verify(created.key, now + 300), 'expired_api_key');
    expect(reads).toBe(1);
  });

  it('never echoes the key in the unknown-key message', async () => {
    const unknown = generateApiKey(PREFIX);
    const error = await expectAuthError(new ApiKeyVerifier(store, PREFIX).verify(unknown), 'invalid_api_key');
    expect(error.message).not.toContain(unknown);
    expect(error.message).not.toContain(unknown.slice(4, 20));
  });

  it('writes last_used_at off the request path, at most once a minute per key', async () => {
    const created = await store.create(owner, 'laptop', null);
    const verifier = new ApiKeyVerifier(store, PREFIX);
    const now = Date.now();
    await verifier.verify(created.key, now);
    await settle();
    expect((await store.listForUser(owner.id))[0]!.last_used_at).toBe(now);
    await verifier.verify(created.key, now + 30_000);
    await settle();
    expect((await store.listForUser(owner.id))[0]!.last_used_at).toBe(now);
    await verifier.verify(created.key, now + 61_000);
    await settle();
    expect((await store.listForUser(owner.id))[0]!.last_used_at).toBe(now + 61_000);
  });

  it('does not let a background refresh that began before a revocation undo forgetAll', async () => {
    const created = await store.create(owner, 'laptop', null);
    const verifier = new ApiKeyVerifier(store, PREFIX);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const countingFind = store.findByHash.bind(store);
    let finds = 0;
    store.findByHash = async (hash: string): Promise<ApiKeyRecord | undefined> => {
      const record = await countingFind(hash);
      if (++finds === 2) await gate; // the background refresh read the row before the revocation
      return record;
    };
    const now = Date.now();
    await verifier.verify(created.key, now);
    await verifier.verify(created.key, now + 600); // stale: answers from cache, refresh now in flight
    await store.revoke(created.id, owner.id);
    verifier.forgetAll();
    release();
    await settle();
    await expectAuthError(verifier.verify(created.key), 'revoked_api_key');
  });
});

describe('ApiKeyVerifier with a static test token', () => {
  const token = 'static-test-token-of-some-length';
  let tester: User;
  beforeEach(async () => {
    tester = await recordSignIn(storage.db, {
      issuer: 'gatehouse:test-token',
      subject: 't@example.test',
      email: 't@example.test',
    });
  });

  it('accepts the token as its user without reading the database', async () => {
    const verifier = new ApiKeyVerifier(store, PREFIX, { token, user: tester });
    const record = await verifier.verify(token);
    expect(record).toEqual({
      id: TEST_TOKEN_KEY_ID,
      expires_at: null,
      revoked_at: null,
      controls: DEFAULT_CONTROLS,
      user: tester,
    });
    expect(reads).toBe(0);
  });

  it('still verifies real keys, and refuses near misses of the token', async () => {
    const created = await store.create(owner, 'laptop', null);
    const verifier = new ApiKeyVerifier(store, PREFIX, { token, user: tester });
    expect((await verifier.verify(created.key)).user).toEqual(owner);
    for (const near of [token.slice(0, -1), `${token}x`, token.toUpperCase(), '']) {
      await expectAuthError(verifier.verify(near), 'invalid_api_key');
    }
  });
});
