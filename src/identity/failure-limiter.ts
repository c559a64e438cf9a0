import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { growingCapacity } from '../storage/capacity.js';
import { AuthError, HttpError } from '../errors.js';

const WINDOW_MS = 60_000;

export interface FailureWindow {
  failures: number;
  /** Milliseconds until the window that began at the first failure closes. */
  resetsInMs: number;
}

/** Counts failures per client address in a one-minute window opened by the first failure. */
export interface FailureCounter {
  read(address: string, now: number): Promise<FailureWindow>;
  add(address: string, now: number): Promise<void>;
}

export function memoryFailureCounter(): FailureCounter {
  const windows = new LRUCache<string, { startedAt: number; failures: number }>(growingCapacity(100_000));
  return {
    read: async (address, now) => {
      const window = windows.get(address);
      if (!window || now - window.startedAt >= WINDOW_MS) return { failures: 0, resetsInMs: 0 };
      return { failures: window.failures, resetsInMs: window.startedAt + WINDOW_MS - now };
    },
    add: async (address, now) => {
      const window = windows.get(address);
      if (!window || now - window.startedAt >= WINDOW_MS) windows.set(address, { startedAt: now, failures: 1 });
      else window.failures += 1;
    },
  };
}

/** Counts under `namespace`, so another count kept per address in the same counter never mixes with it. */
export function namespacedFailureCounter(counter: FailureCounter, namespace: string): FailureCounter {
  return {
    read: (address, now) => counter.read(`${namespace}:${address}`, now),
    add: (address, now) => counter.add(`${namespace}:${address}`, now),
  };
}

/**
 * Shared by every gateway process, so a guesser gains nothing by spreading attempts over replicas.
 * While Redis cannot be reached each replica counts on its own, in `local` (the limit then holds per replica),
 * and shared counting resumes by itself once Redis answers again.
 */
export function redisFailureCounter(
  redis: Redis,
  prefix: string,
  local: FailureCounter = memoryFailureCounter(),
): FailureCounter {
  const keyOf = (address: string) => `${prefix}failed_auth:${address}`;
  return {
    read: async (address, now) => {
      try {
        const [[, failures], [, ttl]] = (await redis.multi().get(keyOf(address)).pttl(keyOf(address)).exec()) as [
          [unknown, string | null],
          [unknown, number],
        ];
        return { failures: Number(failures ?? 0), resetsInMs: Math.max(0, ttl) };
      } catch {
        return local.read(address, now);
      }
    },
    add: async (address, now) => {
      const key = keyOf(address);
      // NX: only the first failure of a window sets its end.
      await redis
        .multi()
        .incr(key)
        .pexpire(key, WINDOW_MS, 'NX')
        .exec()
        .catch(() => local.add(address, now));
    },
  };
}

/**
 * Slows guessing: once a client address has failed `perMinute` times within a minute, every further
 * key attempt from it is refused with 429 until that minute ends, valid key or not, so the answer
 * reveals nothing to a guesser.
 */
export class FailedAuthLimiter {
  constructor(
    private readonly perMinute: number,
    private readonly counter: FailureCounter = memoryFailureCounter(),
  ) {}

  async assertAllowed(address: string, now = Date.now()): Promise<void> {
    if (this.perMinute === 0) return;
    const { failures, resetsInMs } = await this.counter.read(address, now);
    if (failures < this.perMinute) return;
    const retryAfter = Math.max(1, Math.ceil(resetsInMs / 1000));
    throw new HttpError(
      429,
      'too_many_failed_attempts',
      `Too many failed authentication attempts from this address; retry after ${retryAfter} seconds.`,
      { headers: { 'retry-after': String(retryAfter) } },
    );
  }

  /**
   * Runs one credential check from `address` under the limit: refused while the address is locked
   * out, and counted as a failure when the check refuses the credential (an AuthError).
   */
  async guard<T>(address: string, check: () => Promise<T>): Promise<T> {
    await this.assertAllowed(address);
    try {
      return await check();
    } catch (error) {
      if (error instanceof AuthError) await this.recordFailure(address);
      throw error;
    }
  }

  async recordFailure(address: string, now = Date.now()): Promise<void> {
    if (this.perMinute === 0) return;
    await this.counter.add(address, now);
  }
}
