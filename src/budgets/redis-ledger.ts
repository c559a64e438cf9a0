import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { memoryLedger, type Amount, type CounterLine, type Ledger, type Reservation } from './ledger.js';

/**
 * One call brings a batch of this replica's leases up to date. Per counter two hashes: `used`
 * (tokens, micros) and `held` (holder id -> "tokens micros expiresAt"): each replica holds one
 * lease per counter, room it alone may admit requests into. For each counter the script adds what
 * the replica used since its last call, drops holds that expired (a replica that died), and sets
 * the replica's hold: what it has in flight (`keep`), plus, while the budget has room beyond
 * everyone else's use and holds, this request's `ask` and up to a quarter of the rest
 * (at most `chunk`). It answers, per counter, the shared use plus the other holds, and the hold granted.
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
/** How often use is added to the shared counters, and a lease grown or given back. */
const SYNC_INTERVAL_MS = 1_000;
/**
 * A lease lapses this long after its last renewal when its replica died, or when the last
 * reservation in flight would have, whichever is later: the shortest reservation_seconds.
 */
const IDLE_LEASE_MS = 10_000;
/**
 * A lease asks for room for this many reservations of the largest size it has seen beyond what it
 * needs now, or for as many as it admitted in the last second when more: a busy lease then lasts
 * until its next renewal, instead of costing a script call every few requests.
 */
const CHUNK_REQUESTS = 16;
/** Times a reservation asks again when the room it was granted went to requests that asked alongside. */
const MAX_ASKS = 4;

const none = (): Amount => ({ tokens: 0, micros: 0 });

/** This replica's share of one counter. */
interface Lease {
  line: CounterLine;
  /** The hold in Redis since the last sync: room this replica alone may admit into. */
  granted: Amount;
  /** Settled here since the last sync: not yet added to the shared counter. */
  spent: Amount;
  /** Reservations of requests in flight here, and their sum. */
  inFlight: Map<string, { amount: Amount; expiresAt: number }>;
  held: Amount;
  /** The latest expiry of a reservation in flight: the hold lasts at least as long. */
  heldUntil: number;
  /** The shared counter (everyone's use added so far) plus other replicas' holds, at the last sync. */
  others: Amount;
  /** The largest reservation seen: the lease grows in steps of (at least CHUNK_REQUESTS of) them. */
  largest: Amount;
  /** Reservations admitted since the last timer sync, and in the interval before it. */
  admitted: number;
  pace: number;
  /** Asked for by reservations waiting on the next sync, and the latest of their expiries. */
  asking: Amount;
  askingUntil: number;
  /** Admitted into since the last timer sync; an idle lease gives its spare room back. */
  active: boolean;
  /** The last sync granted less than was asked: the budget has no more room. */
  exhausted: boolean;
}

function add(into: Amount, amount: Amount): void {
  into.tokens += amount.tokens;
  into.micros += amount.micros;
}

/** Room left in the lease on every measure the counter limits. */
function hasLeaseRoom(lease: Lease): boolean {
  const { line, granted, spent, held } = lease;
  return (
    (line.tokens === undefined || spent.tokens + held.tokens < granted.tokens) &&
    (line.micros === undefined || spent.micros + held.micros < granted.micros)
  );
}

/** Used plus every reservation, as this replica sees it. */
function totalOf(lease: Lease): Amount {
  return {
    tokens: lease.others.tokens + lease.spent.tokens + lease.held.tokens,
    micros: lease.others.micros + lease.spent.micros + lease.held.micros,
  };
}

/**
 * Counters in Redis, shared by every replica, which each admit requests into leases of room they
 * hold there: a request costs no round trip while its replica's lease has room, and use is added
 * to the shared counters once a second. Each replica may go past its lease by one request's
 * estimate, so replicas together overspend by at most one estimate each (a lone gateway exactly
 * as in memory); another replica's spare room reaches the others within a second of it falling
 * idle. A replica that dies leaves its lease held until it expires: when the last reservation in
 * flight would have, or 10 s after its last renewal. While Redis cannot be reached each process
 * counts on its own (budgets then hold per replica, as the rate limits do), keeps its use to add
 * later, and resumes sharing by itself.
 */
export function redisLedger(redis: Redis, prefix: string, log: Logger): Ledger {
  const local = memoryLedger();
  /** Reservations made in `local` while Redis could not be reached. */
  const localIds = new Set<string>();
  const leases = new Map<string, Lease>();
  const holder = randomBytes(8).toString('hex');
  // Defined commands are sent as EVALSHA, so Redis parses the script once, not on every call.
  redis.defineCommand('gatehouseBudgetSync', { lua: SYNC });
  const scripts = redis as unknown as Record<
    'gatehouseBudgetSync',
    (keys: number, ...args: string[]) => Promise<string>
  >;

  const leaseOf = (line: CounterLine): Lease => {
    let lease = leases.get(line.id);
    if (!lease) {
      lease = {
        line,
        granted: none(),
        spent: none(),
        inFlight: new Map(),
        held: none(),
        heldUntil: 0,
        others: none(),
        largest: none(),
        admitted: 0,
        pace: 0,
        asking: none(),
        askingUntil: 0,
        active: false,
        exhausted: false,
      };
      leases.set(line.id, lease);
    } else lease.line = line;
    return lease;
  };

  /** Brings `batch` up to date in one call; a lease's spare room grows only when `grow` says so. */
  const syncNow = async (batch: ReadonlyMap<Lease, boolean>, now: number) => {
    const keys: string[] = [];
    const argv = [holder, String(now)];
    const sent = [...batch].map(([lease, grow]) => {
      const { line, spent, held, asking, largest } = lease;
      const requests = Math.max(CHUNK_REQUESTS, lease.pace, lease.admitted);
      const chunk = grow ? { tokens: largest.tokens * requests, micros: largest.micros * requests } : none();
      keys.push(`${prefix}budget:used:${line.id}`, `${prefix}budget:held:${line.id}`);
      argv.push(String(spent.tokens), String(spent.micros));
      argv.push(String(held.tokens), String(asking.tokens), String(chunk.tokens), String(line.tokens ?? -1));
      argv.push(String(held.micros), String(asking.micros), String(chunk.micros), String(line.micros ?? -1));
      argv.push(
        String(Math.max(lease.heldUntil, lease.askingUntil, now + IDLE_LEASE_MS)),
        String(Math.max(1, line.endsAt - now + KEPT_AFTER_MS)),
      );
      const request = {
        lease,
        spent: { ...spent },
        wanted: { tokens: held.tokens + asking.tokens, micros: held.micros + asking.micros },
      };
      lease.asking = none();
      lease.askingUntil = 0;
      return request;
    });
    const answer = JSON.parse(await scripts.gatehouseBudgetSync(keys.length, ...keys, ...argv)) as Array<
      [number, number, number, number]
    >;
    for (const [index, { lease, spent, wanted }] of sent.entries()) {
      const [othersTokens, othersMicros, grantedTokens, grantedMicros] = answer[index]!;
      // What was settled while the call was out is added next time.
      lease.spent.tokens -= spent.tokens;
      lease.spent.micros -= spent.micros;
      lease.others = { tokens: othersTokens, micros: othersMicros };
      lease.granted = { tokens: grantedTokens, micros: grantedMicros };
      lease.exhausted =
        (lease.line.tokens !== undefined && grantedTokens < wanted.tokens) ||
        (lease.line.micros !== undefined && grantedMicros < wanted.micros);
    }
  };

  /**
   * One call at a time: what is asked for while one is out waits for it and goes in the next, so
   * a lease is never in two calls at once, and under load one call serves many requests.
   */
  let waiting = new Map<Lease, boolean>();
  let waitingNow = 0;
  let next: Promise<void> | undefined;
  let current: Promise<void> | undefined;
  const schedule = (lease: Lease, grow: boolean, now: number): Promise<void> => {
    waiting.set(lease, waiting.get(lease) === true || grow);
    waitingNow = Math.max(waitingNow, now);
    next ??= (async () => {
      await new Promise((resolve) => setImmediate(resolve));
      await current?.catch(() => undefined);
      const batch = waiting;
      const batchNow = waitingNow;
      waiting = new Map();
      waitingNow = 0;
      next = undefined;
      current = syncNow(batch, batchNow);
      try {
        await current;
      } finally {
        current = undefined;
      }
    })();
    return next;
  };
  const askFor = (lease: Lease, amount: Amount, expiresAt: number, now: number): Promise<void> => {
    add(lease.asking, amount);
    lease.askingUntil = Math.max(lease.askingUntil, expiresAt);
    return schedule(lease, true, now);
  };

  const hold = (lease: Lease, id: string, amount: Amount, expiresAt: number) => {
    const current = lease.inFlight.get(id);
    if (current) {
      add(current.amount, amount);
      current.expiresAt = expiresAt;
    } else {
      lease.inFlight.set(id, { amount: { ...amount }, expiresAt });
      lease.admitted++;
    }
    add(lease.held, amount);
    lease.heldUntil = Math.max(lease.heldUntil, expiresAt);
    lease.active = true;
  };

  /** Reserves in the leases, asking Redis for more room where one has none left. */
  const reserveShared = async (
    leased: readonly Lease[],
    id: string,
    amount: Amount,
    expiresAt: number,
    now: number,
  ): Promise<Reservation> => {
    for (let asks = 0; ; asks++) {
      const short = leased.filter((lease) => !hasLeaseRoom(lease));
      if (short.length === 0) break;
      const refused = leased.findIndex((lease) => !hasLeaseRoom(lease) && (lease.exhausted || asks === MAX_ASKS));
      if (asks > 0 && refused >= 0) return { refused, totals: leased.map(totalOf) };
      await Promise.all(short.map((lease) => askFor(lease, amount, expiresAt, now)));
    }
    for (const lease of leased) hold(lease, id, amount, expiresAt);
    return { totals: leased.map(totalOf) };
  };

  const fallBack = (error: unknown) => log.warn({ err: error }, 'budget counters unavailable in redis; counting here');

  /** Adds what was used, gives idle leases' spare room back, keeps active ones a step ahead. */
  const syncAll = async (closing: boolean) => {
    const synced: Array<Promise<void>> = [];
    const now = Date.now();
    for (const [id, lease] of leases) {
      const spare = lease.granted.tokens > lease.held.tokens || lease.granted.micros > lease.held.micros;
      const unsent = lease.spent.tokens !== 0 || lease.spent.micros !== 0;
      const grow = lease.active && !closing;
      if (unsent || grow || (spare && !lease.active) || (spare && closing)) synced.push(schedule(lease, grow, now));
      else if (lease.inFlight.size === 0 && !spare && !waiting.has(lease)) leases.delete(id);
      lease.active = false;
      lease.pace = lease.admitted;
      lease.admitted = 0;
    }
    await Promise.all(synced);
  };
  const timer = setInterval(() => syncAll(false).catch(fallBack), SYNC_INTERVAL_MS).unref();

  return {
    reserve(lines, id, amount, expiresAt, now) {
      const leased = lines.map(leaseOf);
      let roomInEvery = true;
      for (const lease of leased) {
        lease.active = true;
        lease.largest.tokens = Math.max(lease.largest.tokens, amount.tokens);
        lease.largest.micros = Math.max(lease.largest.micros, amount.micros);
        roomInEvery &&= hasLeaseRoom(lease);
      }
      // The usual case: room in every lease, no round trip and no promise.
      if (roomInEvery) {
        for (const lease of leased) hold(lease, id, amount, expiresAt);
        return { totals: leased.map(totalOf) };
      }
      return reserveShared(leased, id, amount, expiresAt, now).catch((error: unknown) => {
        fallBack(error);
        localIds.add(id);
        return local.reserve(lines, id, amount, expiresAt, now);
      });
    },
    settle(lines, id, used) {
      for (const line of lines) {
        const lease = leaseOf(line);
        const current = lease.inFlight.get(id);
        if (current) {
          lease.inFlight.delete(id);
          lease.held.tokens -= current.amount.tokens;
          lease.held.micros -= current.amount.micros;
          if (lease.inFlight.size === 0) lease.heldUntil = 0;
        }
        add(lease.spent, used);
      }
      if (localIds.delete(id)) return local.settle(lines, id, used);
    },
    async read(ids) {
      const unsent = (id: string): Amount => leases.get(id)?.spent ?? none();
      try {
        const rows = await Promise.all(ids.map((id) => redis.hmget(`${prefix}budget:used:${id}`, 'tokens', 'micros')));
        return rows.map(([tokens, micros], index) => ({
          tokens: Number(tokens ?? 0) + unsent(ids[index]!).tokens,
          micros: Number(micros ?? 0) + unsent(ids[index]!).micros,
        }));
      } catch {
        return local.read(ids);
      }
    },
    async close() {
      clearInterval(timer);
      await syncAll(true).catch(fallBack);
    },
  };
}
