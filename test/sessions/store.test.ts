import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SessionStore } from '../../src/sessions/store.js';
import { openStorage, type Storage } from '../../src/storage/database.js';
import type { CacheLookup, SharedCache } from '../../src/storage/shared-cache.js';
import { recordSignIn } from '../../src/users/store.js';

const LIFETIME = { idleMs: 3_600_000, maxMs: 86_400_000 };

let storage: Storage;
let userId: string;

beforeEach(async () => {
  storage = await openStorage('sqlite::memory:');
  userId = (
    await recordSignIn(storage.db, { issuer: 'https://id.example.test', subject: 'u-1', email: 'u@example.test' })
  ).id;
});
afterEach(() => storage.close());

/** A shared cache that always misses, and holds stores until the test lets them go, once. */
function heldCache(): SharedCache & { release(): void; waiting(): number } {
  const held: Array<() => void> = [];
  let holding = true;
  return {
    get: async <T>(): Promise<CacheLookup<T>> => ({ hit: false, version: '0' }),
    set: () => (holding ? new Promise<void>((resolve) => held.push(resolve)) : Promise.resolve()),
    invalidate: async () => undefined,
    release: () => {
      holding = false;
      held.splice(0).forEach((go) => go());
    },
    waiting: () => held.length,
  };
}

describe('SessionStore', () => {
  it('does not keep an answer read before a change notice it was in flight for', async () => {
    const cache = heldCache();
    const sessions = new SessionStore(storage.db, LIFETIME, cache);
    const token = await sessions.create(userId, undefined);
    // A lookup has read the live session and is storing its answer when the session is ended
    // elsewhere and the change notice is applied.
    const inFlight = sessions.find(token);
    await expect.poll(() => cache.waiting()).toBe(1);
    await storage.db.deleteFrom('sessions').execute();
    sessions.forgetAll();
    cache.release();
    expect(await inFlight, 'the lookup read the session before it ended').toBeDefined();
    expect(await sessions.find(token), 'an answer from before the notice was served after it').toBeUndefined();
  });
});
