import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { memoryLedger, type Amount, type CounterLine, type Ledger, type Reservation } from './ledger.js';

/**
 * Per counter two hashes: `used` (tokens, micros) and `held` (reservation id -> "tokens micros
 * expiresAt"). One script checks and reserves on all of a request's counters, so it is atomic
 * across replicas; expired reservations (a replica that died mid-stream) are dropped as it reads.
 * The reservations asked for in one turn of the event loop go in one call, each in turn, as if
 * each were its own call.
 * ARGV per reservation: counter count, id, tokens, micros, expiresAt, now, then per counter: token
 * limit, micros limit (-1 = none), ttl ms. KEYS per counter: used, held.
 */
const RESERVE = `
local results = {}
local a, k = 1, 0
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local id, addTokens, addMicros, expiresAt, now = ARGV[a+1], tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), ARGV[a+4], tonumber(ARGV[a+5])
  local totals = {}
  local refused = -1
  for i = 1, n do
    local usedKey, heldKey = KEYS[k+2*i-1], KEYS[k+2*i]
    local used = redis.call('HMGET', usedKey, 'tokens', 'micros')
    local tokens = tonumber(used[1] or '0')
    local micros = tonumber(used[2] or '0')
    local held = redis.call('HGETALL', heldKey)
    for j = 1, #held, 2 do
      local t, m, e = string.match(held[j+1], '(%d+) (%d+) (%d+)')
      if tonumber(e) <= now then
        redis.call('HDEL', heldKey, held[j])
      else
        tokens = tokens + tonumber(t)
        micros = micros + tonumber(m)
      end
    end
    totals[i] = {tokens, micros}
    local limitTokens = tonumber(ARGV[a+3+3*i])
    local limitMicros = tonumber(ARGV[a+4+3*i])
    if refused < 0 and ((limitTokens >= 0 and tokens >= limitTokens) or (limitMicros >= 0 and micros >= limitMicros)) then
      refused = i - 1
    end
  end
  if refused < 0 then
    for i = 1, n do
      local usedKey, heldKey = KEYS[k+2*i-1], KEYS[k+2*i]
      local current = redis.call('HGET', heldKey, id)
      local t, m = 0, 0
      if current then t, m = string.match(current, '(%d+) (%d+)') end
      redis.call('HSET', heldKey, id, (tonumber(t) + addTokens) .. ' ' .. (tonumber(m) + addMicros) .. ' ' .. expiresAt)
      local ttl = ARGV[a+5+3*i]
      redis.call('PEXPIRE', heldKey, ttl)
      redis.call('PEXPIRE', usedKey, ttl)
      totals[i] = {totals[i][1] + addTokens, totals[i][2] + addMicros}
    end
  end
  results[#results+1] = {refused, totals}
  a = a + 6 + 3*n
  k = k + 2*n
end
return cjson.encode(results)
`;

/**
 * The settlements of one turn of the event loop in one call. ARGV per settlement: counter count,
 * id, tokens, micros, then per counter its ttl ms. KEYS per counter: used, held.
 */
const SETTLE = `
local a, k = 1, 0
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  for i = 1, n do
    redis.call('HDEL', KEYS[k+2*i], ARGV[a+1])
    redis.call('HINCRBY', KEYS[k+2*i-1], 'tokens', ARGV[a+2])
    redis.call('HINCRBY', KEYS[k+2*i-1], 'micros', ARGV[a+3])
    redis.call('PEXPIRE', KEYS[k+2*i-1], ARGV[a+3+i])
  end
  a = a + 4 + n
  k = k + 2*n
end
return 1
`;

/** Counters are kept a month past their window, for the account page and admins. */
const KEPT_AFTER_MS = 31 * 86_400_000;

interface Call<Result> {
  keys: string[];
  argv: string[];
  resolve(result: Result): void;
  /** Does the operation in this process instead, when Redis cannot be reached. */
  fallBack(): void;
}

/**
 * Gathers the calls made in one turn of the event loop into one script run: under load one round
 * trip and one socket write serve many requests, not one each.
 */
function batched<Result>(
  run: (keys: string[], argv: string[]) => Promise<unknown>,
  resultsOf: (answer: unknown) => Result[],
  onError: (error: unknown) => void,
): (call: Call<Result>) => void {
  let pending: Array<Call<Result>> = [];
  const flush = () => {
    const calls = pending;
    pending = [];
    run(
      calls.flatMap((call) => call.keys),
      calls.flatMap((call) => call.argv),
    ).then(
      (answer) => {
        const results = resultsOf(answer);
        for (const [index, call] of calls.entries()) call.resolve(results[index]!);
      },
      (error: unknown) => {
        onError(error);
        for (const call of calls) call.fallBack();
      },
    );
  };
  return (call) => {
    if (pending.push(call) === 1) setImmediate(flush);
  };
}

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
  const reserve = batched<Reservation>(
    (keys, argv) => scripts.gatehouseBudgetReserve(keys.length, ...keys, ...argv),
    (answer) =>
      (JSON.parse(answer as string) as Array<[number, Array<[number, number]>]>).map(([refused, totals]) => {
        const amounts = totals.map(([tokens, micros]): Amount => ({ tokens, micros }));
        return refused >= 0 ? { refused, totals: amounts } : { totals: amounts };
      }),
    fallBack,
  );
  const settle = batched<void>(
    (keys, argv) => scripts.gatehouseBudgetSettle(keys.length, ...keys, ...argv),
    () => [],
    fallBack,
  );
  return {
    reserve: (lines, id, amount, expiresAt, now) =>
      new Promise((resolve, reject) => {
        const argv = [lines.length, id, amount.tokens, amount.micros, expiresAt, now].map(String);
        for (const line of lines) argv.push(String(line.tokens ?? -1), String(line.micros ?? -1), ttlOf(line, now));
        reserve({
          keys: keysOf(lines),
          argv,
          resolve,
          fallBack: () => local.reserve(lines, id, amount, expiresAt, now).then(resolve, reject),
        });
      }),
    settle: (lines, id, used) =>
      new Promise((resolve, reject) => {
        const now = Date.now();
        settle({
          keys: keysOf(lines),
          argv: [
            String(lines.length),
            id,
            String(used.tokens),
            String(used.micros),
            ...lines.map((line) => ttlOf(line, now)),
          ],
          resolve,
          fallBack: () => local.settle(lines, id, used).then(resolve, reject),
        });
      }),
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
