import { LRUCache } from 'lru-cache';
import { HttpError } from '../errors.js';

const WINDOW_MS = 60_000;

interface Window {
  startedAt: number;
  failures: number;
}

/**
 * Slows guessing: once a client address has failed `perMinute` times in the current minute, every
 * further key attempt from it is refused with 429 until the minute ends, valid key or not, so the
 * answer reveals nothing to a guesser.
 */
export class FailedAuthLimiter {
  private readonly windows = new LRUCache<string, Window>({ max: 100_000 });

  constructor(private readonly perMinute: number) {}

  assertAllowed(address: string, now = Date.now()): void {
    if (this.perMinute === 0) return;
    const window = this.windows.get(address);
    if (!window || now - window.startedAt >= WINDOW_MS || window.failures < this.perMinute) return;
    const retryAfter = Math.max(1, Math.ceil((window.startedAt + WINDOW_MS - now) / 1000));
    throw new HttpError(
      429,
      'too_many_failed_attempts',
      `Too many failed authentication attempts from this address; retry after ${retryAfter} seconds.`,
      { headers: { 'retry-after': String(retryAfter) } },
    );
  }

  recordFailure(address: string, now = Date.now()): void {
    if (this.perMinute === 0) return;
    const window = this.windows.get(address);
    if (!window || now - window.startedAt >= WINDOW_MS) this.windows.set(address, { startedAt: now, failures: 1 });
    else window.failures += 1;
  }
}
