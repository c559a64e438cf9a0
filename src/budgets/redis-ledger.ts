import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { memoryLedger, type Amount, type CounterLine, type Ledger } from './ledger.js';

/**
 * Per counter two hashes: `used` (tokens, micros) and `held` (reservation id -> "tokens micros
 * expiresAt"). One script checks and reserves on all of a request's counters, so it is atomic
 * across replicas; expired reservations (a replica that died mid-stream) are dropped as it reads.
 * ARGV: id, tokens, micros, expiresAt, now, then per counter: token limit, micros limit (-1 = none), ttl ms.
 */
const RESERVE = `
local n = #KEYS / 2
local totals = {}
local refused = -1
for i = 1, n do
  local used = redis.call('HMGET', KEYS[2*i-1], 'tokens', 'micros')
  local tokens = tonumber(used[1] or '0')
  local micros = tonumber(used[2] or '0')
  local held = redis.call('HGETALL', KEYS[2*i])
  for j = 1, #held, 2 do
    local t, m, e = string.match(held[j+1], '(%d+) (%d+) (%d+)')
    if tonumber(e) <= tonumber(ARGV[5]) then
      redis.call('HDEL', KEYS[2*i], held[j])
    else
      tokens = tokens + tonumber(t)
      micros = micros + tonumber(m)
    end
  end
  totals[i] = {tokens, micros}
  local limitTokens = tonumber(ARGV[3+3*i])
  local limitMicros = tonumber(ARGV[4+3*i])
  if refused < 0 and ((limitTokens >= 0 and tokens >= limitTokens) or (limitMicros >= 0 and micros >= limitMicros)) then
    refused = i - 1
  end
end
if refused >= 0 then return {refused, cjson.encode(totals)} end
for i = 1, n do
  local current = redis.call('HGET', KEYS[2*i], ARGV[1])
  local t, m = 0, 0
  if current then t, m = string.match(current, '(%d+) (%d+)') end
  redis.call('HSET', KEYS[2*i], ARGV[1], (tonumber(t) + tonumber(ARGV[2])) .. ' ' .. (tonumber(m) + tonumber(ARGV[3])) .. ' ' .. ARGV[4])
  redis.call('PEXPIRE', KEYS[2*i], ARGV[5+3*i])
  redis.call('PEXPIRE', KEYS[2*i-1], ARGV[5+3*i])
  totals[i] = {totals[i][1] + tonumber(ARGV[2]), totals[i][2] + tonumber(ARGV[3])}
end
return {-1, cjson.encode(totals)}
`;

/** ARGV: id, tokens, micros, then per counter its ttl ms. */
const SETTLE = `
for i = 1, #KEYS / 2 do
  redis.call('HDEL', KEYS[2*i], ARGV[1])
  redis.call('HINCRBY', KEYS[2*i-1], 'tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[2*i-1], 'micros', ARGV[3])
  redis.call('PEXPIRE', KEYS[2*i-1], ARGV[3+i])
end
return 1
`;

/** Counters are kept a month past their window, for the account page and admins. */
const KEPT_AFTER_MS = 31 * 86_400_000;

/**
 * Counters in Redis, shared by every replica. While Redis cannot be reached each process counts on
 * its own (budgets then hold per replica, as the rate limits do), and resumes sharing by itself.
 */
export function redisLedger(redis: Redis, prefix: string, log: Logger): Ledger {
  const local = memoryLedger();
  // Defined commands are sent as EVALSHA, so Redis parses each script once, not on every request.
  redis.defineCommand('gatehouseBudgetReserve', { lua: RESERVE });
  redis.defineCommand('gatehouseBudgetSettle', { lua: SETTLE });
  const scripts = redis as unknown as Record<
    'gatehouseBudgetReserve' | 'gatehouseBudgetSettle',
    (numberOfKeys: number, ...args: string[]) => Promise<unknown>
  >;
  const keysOf = (lines: readonly CounterLine[]) =>
    lines.flatMap((line) => [`${prefix}budget:used:${line.id}`, `${prefix}budget:held:${line.id}`]);
  const ttlOf = (line: CounterLine, now: number) => String(Math.max(1, line.endsAt - now + KEPT_AFTER_MS));
  const fallBack = (error: unknown) => log.warn({ err: error }, 'budget counters unavailable in redis; counting here');
  return {
    async reserve(lines, id, amount, expiresAt, now) {
      const argv = [id, amount.tokens, amount.micros, expiresAt, now].map(String);
      for (const line of lines) argv.push(String(line.tokens ?? -1), String(line.micros ?? -1), ttlOf(line, now));
      try {
        const [refused, totals] = (await scripts.gatehouseBudgetReserve(
          lines.length * 2,
          ...keysOf(lines),
          ...argv,
        )) as [number, string];
        const parsed = (JSON.parse(totals) as Array<[number, number]>).map(([tokens, micros]): Amount => ({
          tokens,
          micros,
        }));
        return refused >= 0 ? { refused, totals: parsed } : { totals: parsed };
      } catch (error) {
        fallBack(error);
        return local.reserve(lines, id, amount, expiresAt, now);
      }
    },
    async settle(lines, id, used) {
      const now = Date.now();
      try {
        await scripts.gatehouseBudgetSettle(
          lines.length * 2,
          ...keysOf(lines),
          id,
          String(used.tokens),
          String(used.micros),
          ...lines.map((line) => ttlOf(line, now)),
        );
      } catch (error) {
        fallBack(error);
        await local.settle(lines, id, used);
      }
    },
    async read(ids) {
      try {
        const rows = await Promise.all(ids.map((id) => redis.hmget(`${prefix}budget:used:${id}`, 'tokens', 'micros')));
        return rows.map(([tokens, micros]) => ({ tokens: Number(tokens ?? 0), micros: Number(micros ?? 0) }));
      } catch {
        return local.read(ids);
      }
    },
  };
}
