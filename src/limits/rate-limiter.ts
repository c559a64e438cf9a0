import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { growingCapacity } from '../storage/capacity.js';
import { HttpError } from '../errors.js';

const WINDOW_MS = 60_000;

/** Counts in fixed one-minute windows, as OpenAI's limits reset; shared through Redis when configured. */
export interface WindowCounter {
  /** Adds `amount` and returns the new total of this window. */
  add(key: string, window: number, amount: number): Promise<number>;
  read(key: string, window: number): Promise<number>;
}

export function memoryWindowCounter(): WindowCounter {
  const counts = new LRUCache<string, number>({ ...growingCapacity(200_000), ttl: WINDOW_MS * 2 });
  return {
    add: async (key, window, amount) => {
      const id = `${window}|${key}`;
      const total = (counts.get(id) ?? 0) + amount;
      counts.set(id, total);
      return total;
    },
    read: async (key, window) => counts.get(`${window}|${key}`) ?? 0,
  };
}

/**
 * Shared by every gateway process. While Redis cannot be reached each replica counts on its own,
 * in `local` (limits then hold per replica), and shared counting resumes by itself once Redis answers again.
 */
export function redisWindowCounter(
  redis: Redis,
  prefix: string,
  local: WindowCounter = memoryWindowCounter(),
): WindowCounter {
  const id = (key: string, window: number) => `${prefix}rate:${window}:${key}`;
  return {
    add: async (key, window, amount) => {
      try {
        const [[, total]] = (await redis
          .multi()
          .incrby(id(key, window), amount)
          .pexpire(id(key, window), WINDOW_MS * 2)
          .exec()) as [[unknown, number], unknown];
        return total;
      } catch {
        return local.add(key, window, amount);
      }
    },
    read: async (key, window) => {
      try {
        return Number((await redis.get(id(key, window))) ?? 0);
      } catch {
        return local.read(key, window);
      }
    },
  };
}

export interface Limits {
  keyId: string;
  userId: string;
  /** 0 = unlimited. */
  keyRequests: number;
  keyTokens: number;
  userRequests: number;
  userTokens: number;
}

/**
 * Requests and tokens per minute, per key and per user across their keys. A request is counted as
 * it arrives; tokens only once the platform has reported them, so a request is refused when the
 * minute's tokens are already spent.
 */
export class RateLimiter {
  constructor(private readonly counter: WindowCounter = memoryWindowCounter()) {}

  /** False when every limit is 0 (unlimited): then there is nothing to count or refuse. */
  applies(limits: Limits): boolean {
    return limits.keyRequests > 0 || limits.keyTokens > 0 || limits.userRequests > 0 || limits.userTokens > 0;
  }

  /** Counts the request, or throws 429 with Retry-After; returns OpenAI's x-ratelimit-* headers. */
  async admit(limits: Limits, now = Date.now()): Promise<Record<string, string>> {
    const window = Math.floor(now / WINDOW_MS);
    const resetSeconds = Math.max(1, Math.ceil(((window + 1) * WINDOW_MS - now) / 1000));
    const checks = [
      { scope: 'key', id: limits.keyId, requests: limits.keyRequests, tokens: limits.keyTokens },
      { scope: 'user', id: limits.userId, requests: limits.userRequests, tokens: limits.userTokens },
    ].filter((check) => check.requests > 0 || check.tokens > 0);
    const headers: Record<string, string> = {};
    for (const check of checks) {
      const [requests, tokens] = await Promise.all([
        check.requests > 0 ? this.counter.add(`${check.scope}:req:${check.id}`, window, 1) : 0,
        check.tokens > 0 ? this.counter.read(`${check.scope}:tok:${check.id}`, window) : 0,
      ]);
      const overRequests = check.requests > 0 && requests > check.requests;
      const overTokens = check.tokens > 0 && tokens >= check.tokens;
      if (check.scope === 'key' || overRequests || overTokens) {
        if (check.requests > 0) {
          headers['x-ratelimit-limit-requests'] = String(check.requests);
          headers['x-ratelimit-remaining-requests'] = String(Math.max(0, check.requests - requests));
          headers['x-ratelimit-reset-requests'] = `${resetSeconds}s`;
        }
        if (check.tokens > 0) {
          headers['x-ratelimit-limit-tokens'] = String(check.tokens);
          headers['x-ratelimit-remaining-tokens'] = String(Math.max(0, check.tokens - tokens));
          headers['x-ratelimit-reset-tokens'] = `${resetSeconds}s`;
        }
      }
      if (overRequests || overTokens) {
        const what = overRequests ? `${check.requests} requests` : `${check.tokens} tokens`;
        const whose = check.scope === 'key' ? 'this API key' : 'your account';
        throw new HttpError(
          429,
          overRequests ? 'rate_limit_exceeded' : 'tokens_limit_exceeded',
          `Rate limit reached for ${whose}: ${what} per minute. Retry after ${resetSeconds} seconds.`,
          { headers: { ...headers, 'retry-after': String(resetSeconds) } },
        );
      }
    }
    return headers;
  }

  /** Adds the tokens a finished request used to its key's and user's minute. */
  async spend(limits: Limits, tokens: number, now = Date.now()): Promise<void> {
    if (tokens <= 0) return;
    const window = Math.floor(now / WINDOW_MS);
    const adds: Array<Promise<number>> = [];
    if (limits.keyTokens > 0) adds.push(this.counter.add(`key:tok:${limits.keyId}`, window, tokens));
    if (limits.userTokens > 0) adds.push(this.counter.add(`user:tok:${limits.userId}`, window, tokens));
    await Promise.all(adds);
  }
}
