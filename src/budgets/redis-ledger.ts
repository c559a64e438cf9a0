import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { leaseLedger, type LeaseStore } from './lease-ledger.js';
import type { Ledger } from './ledger.js';

/**
 * One call brings a batch of this replica's leases up to date. Per counter two hashes: `used`
 * (tokens, micros) and `held` (holder id -> "tokens micros expiresAt"): each replica holds one
 * lease per counter, room it alone may admit requests into. For each counter the script adds what
 * the replica used since its last call, drops holds that expired (a replica that died), and sets
 * the replica's hold as `grantOn` (lease-ledger.ts) computes it. It answers, per counter, the
 * shared use plus the other holds, and the hold granted.
 * ARGV: holder id, now, then per counter: add tokens, add micros, then per measure (tokens,
 * micros): keep, ask, chunk, limit (-1 = none); then the hold's expiresAt and the keys' ttl ms.
 * KEYS per counter: used, held.
 */
const SYNC = `
local holder, now = ARGV[1], tonumber(ARGV[2])
local results = {}
local a = 3
for i = 1, #KEYS / 2 do
  local usedKey, heldKey = KEYS[2*i-1], KEYS[2*i]
  local addTokens, addMicros = tonumber(ARGV[a]), tonumber(ARGV[a+1])
  if addTokens ~= 0 then redis.call('HINCRBY', usedKey, 'tokens', addTokens) end
  if addMicros ~= 0 then redis.call('HINCRBY', usedKey, 'micros', addMicros) end
  local used = redis.call('HMGET', usedKey, 'tokens', 'micros')
  local others = {tonumber(used[1] or '0'), tonumber(used[2] or '0')}
  local held = redis.call('HGETALL', heldKey)
  for j = 1, #held, 2 do
    if held[j] ~= holder then
      local t, m, e = string.match(held[j+1], '(%d+) (%d+) (%d+)')
      if tonumber(e) <= now then
        redis.call('HDEL', heldKey, held[j])
      else
        others[1] = others[1] + tonumber(t)
        others[2] = others[2] + tonumber(m)
      end
    end
  end
  local grant = {}
  for k = 1, 2 do
    local b = a + 2 + 4*(k-1)
    local keep, ask, chunk, limit = tonumber(ARGV[b]), tonumber(ARGV[b+1]), tonumber(ARGV[b+2]), tonumber(ARGV[b+3])
    local free = limit - others[k] - keep
    if limit < 0 or free <= 0 then
      grant[k] = keep
    else
      local asked = math.min(ask, free)
      grant[k] = keep + asked + math.min(chunk, math.floor((free - asked) / 4))
    end
  end
  if grant[1] == 0 and grant[2] == 0 then
    redis.call('HDEL', heldKey, holder)
  else
    redis.call('HSET', heldKey, holder, string.format('%d %d %s', grant[1], grant[2], ARGV[a+10]))
  end
  redis.call('PEXPIRE', heldKey, ARGV[a+11])
  redis.call('PEXPIRE', usedKey, ARGV[a+11])
  results[i] = {others[1], others[2], grant[1], grant[2]}
  a = a + 12
end
return cjson.encode(results)
`;

/** Counters are kept a month past their window, for the account page and admins. */
const KEPT_AFTER_MS = 31 * 86_400_000;

/** Counters and leases in Redis: one script call renews a batch of leases. */
function redisLeaseStore(redis: Redis, prefix: string): LeaseStore {
  // Defined commands are sent as EVALSHA, so Redis parses the script once, not on every call.
  redis.defineCommand('gatehouseBudgetSync', { lua: SYNC });
  const scripts = redis as unknown as Record<
    'gatehouseBudgetSync',
    (keys: number, ...args: string[]) => Promise<string>
  >;
  return {
    async renew(holder, now, renewals) {
      const keys: string[] = [];
      const argv = [holder, String(now)];
      for (const { line, spent, keep, ask, chunk, holdUntil } of renewals) {
        keys.push(`${prefix}budget:used:${line.id}`, `${prefix}budget:held:${line.id}`);
        argv.push(String(spent.tokens), String(spent.micros));
        argv.push(String(keep.tokens), String(ask.tokens), String(chunk.tokens), String(line.tokens ?? -1));
        argv.push(String(keep.micros), String(ask.micros), String(chunk.micros), String(line.micros ?? -1));
        argv.push(String(holdUntil), String(Math.max(1, line.endsAt - now + KEPT_AFTER_MS)));
      }
      const answer = JSON.parse(await scripts.gatehouseBudgetSync(keys.length, ...keys, ...argv)) as Array<
        [number, number, number, number]
      >;
      return answer.map(([othersTokens, othersMicros, grantedTokens, grantedMicros]) => ({
        others: { tokens: othersTokens, micros: othersMicros },
        granted: { tokens: grantedTokens, micros: grantedMicros },
      }));
    },
    async read(ids) {
      const rows = await Promise.all(ids.map((id) => redis.hmget(`${prefix}budget:used:${id}`, 'tokens', 'micros')));
      return rows.map(([tokens, micros]) => ({ tokens: Number(tokens ?? 0), micros: Number(micros ?? 0) }));
    },
  };
}

/** Budget counters shared through Redis, each replica admitting into leases it holds there (lease-ledger.ts). */
export function redisLedger(redis: Redis, prefix: string, log: Logger): Ledger {
  return leaseLedger(redisLeaseStore(redis, prefix), log, 'redis');
}
