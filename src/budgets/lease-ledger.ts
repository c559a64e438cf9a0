import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import { memoryLedger, type Amount, type CounterLine, type Ledger, type Reservation } from './ledger.js';

/** What one renewal of a replica's lease on one counter sends to the shared store. */
export interface LeaseRenewal {
  line: CounterLine;
  /** Settled by this replica since its last renewal: added to the shared counter. */
  spent: Amount;
  /** Reserved by requests in flight here: the lease keeps at least this. */
  keep: Amount;
  /** Wanted now by reservations waiting on this renewal. */
  ask: Amount;
  /** Spare room wished for beyond `keep` and `ask`; granted up to a quarter of the room nobody holds. */
  chunk: Amount;
  /** When the lease lapses unless renewed again: its replica died. */
  holdUntil: number;
}

/** The shared store's answer for one counter. */
export interface LeaseGrant {
  /** The shared counter (everyone's use added so far) plus the other replicas' leases. */
  others: Amount;
  /** This replica's lease now. */
  granted: Amount;
}

/** Where the shared counters and every replica's leases live: Redis, or the database. */
export interface LeaseStore {
  /** Adds each counter's use and renews `holder`'s lease on it, dropping lapsed leases, atomically. */
  renew(holder: string, now: number, renewals: readonly LeaseRenewal[]): Promise<LeaseGrant[]>;
  /** The shared counters' use. */
  read(ids: readonly string[]): Promise<Amount[]>;
}

/**
 * The lease granted on one measure: what is in flight (`keep`), and, while the limit has room
 * beyond everyone else's use and leases, what is asked for now and up to a quarter of the rest
 * (at most `chunk`). `limit` undefined: the measure is not limited, and nothing beyond `keep` is held.
 * Redis computes the same in its script.
 */
export function grantOn(limit: number | undefined, others: number, keep: number, ask: number, chunk: number): number {
  if (limit === undefined) return keep;
  const free = limit - others - keep;
  if (free <= 0) return keep;
  const asked = Math.min(ask, free);
  return keep + asked + Math.min(chunk, Math.floor((free - asked) / 4));
}

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
 * until its next renewal, instead of costing a call to the store every few requests.
 */
const CHUNK_REQUESTS = 16;
/** Times a reservation asks again when the room it was granted went to requests that asked alongside. */
const MAX_ASKS = 4;

const none = (): Amount => ({ tokens: 0, micros: 0 });

/** This replica's share of one counter. */
interface Lease {
  line: CounterLine;
  /** The lease in the store since the last renewal: room this replica alone may admit into. */
  granted: Amount;
  /** Settled here since the last renewal: not yet added to the shared counter. */
  spent: Amount;
  /** Reservations of requests in flight here, and their sum. */
  inFlight: Map<string, { amount: Amount; expiresAt: number }>;
  held: Amount;
  /** The latest expiry of a reservation in flight: the lease lasts at least as long. */
  heldUntil: number;
  /** The shared counter plus other replicas' leases, at the last renewal. */
  others: Amount;
  /** The largest reservation seen: the lease grows in steps of (at least CHUNK_REQUESTS of) them. */
  largest: Amount;
  /** Reservations admitted since the last timer renewal, and in the interval before it. */
  admitted: number;
  pace: number;
  /** Asked for by reservations waiting on the next renewal, and the latest of their expiries. */
  asking: Amount;
  askingUntil: number;
  /** Admitted into since the last timer renewal; an idle lease gives its spare room back. */
  active: boolean;
  /** The last renewal granted less than was asked: the budget has no more room. */
  exhausted: boolean;
  /**
   * While a renewal is out: the most this replica may have used and reserved until it answers,
   * what the renewal adds to the shared counter plus what it keeps. The store may shrink the
   * lease to that, so admitting past it would hand other replicas room already taken here.
   */
  renewing?: Amount;
}

function add(into: Amount, amount: Amount): void {
  into.tokens += amount.tokens;
  into.micros += amount.micros;
}

/**
 * Room left in the lease on every measure the counter limits, and in the budget as this replica
 * last saw it: a lease granted over a full budget only covers requests in flight, and one that
 * settles below its reservation must not open room the budget no longer has.
 */
function hasLeaseRoom(lease: Lease): boolean {
  const { line, granted, spent, held, others, renewing } = lease;
  return (
    (line.tokens === undefined ||
      (spent.tokens + held.tokens < granted.tokens &&
        others.tokens + spent.tokens + held.tokens < line.tokens &&
        (renewing === undefined || spent.tokens + held.tokens < renewing.tokens))) &&
    (line.micros === undefined ||
      (spent.micros + held.micros < granted.micros &&
        others.micros + spent.micros + held.micros < line.micros &&
        (renewing === undefined || spent.micros + held.micros < renewing.micros)))
  );
}

/** Drops reservation `id` from the lease: settled, or lapsed. */
function release(lease: Lease, id: string, amount: Amount): void {
  lease.inFlight.delete(id);
  lease.held.tokens -= amount.tokens;
  lease.held.micros -= amount.micros;
  if (lease.inFlight.size === 0) lease.heldUntil = 0;
}

/** Used plus every reservation, as this replica sees it. */
function totalOf(lease: Lease): Amount {
  return {
    tokens: lease.others.tokens + lease.spent.tokens + lease.held.tokens,
    micros: lease.others.micros + lease.spent.micros + lease.held.micros,
  };
}

/**
 * Counters shared by every replica through `store`, which each admit requests into leases of room
 * they hold there: a request costs no round trip while its replica's lease has room, and use is
 * added to the shared counters once a second. Each replica may go past its lease by one request's
 * estimate, so replicas together overspend by at most one estimate each (a lone gateway exactly
 * as in memory); another replica's spare room reaches the others within a second of it falling
 * idle. A replica that dies leaves its lease held until it expires: when the last reservation in
 * flight would have, or 10 s after its last renewal. While the store cannot be reached each
 * process counts on its own (budgets then hold per replica, as the rate limits do), keeps its use
 * to add later, and resumes sharing by itself. `where` names the store in the log.
 */
export function leaseLedger(store: LeaseStore, log: Logger, where: string): Ledger {
  const local = memoryLedger();
  /** Reservations made in `local` while the store could not be reached. */
  const localIds = new Set<string>();
  const leases = new Map<string, Lease>();
  const holder = randomBytes(8).toString('hex');

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
    const sent = [...batch].map(([lease, grow]) => {
      const { line, spent, held, asking, largest } = lease;
      const requests = Math.max(CHUNK_REQUESTS, lease.pace, lease.admitted);
      // A growing lease keeps all the room it has (admissions go on into it while the call is out);
      // one given back keeps what is in flight, and admits nothing more until the answer.
      const keep = grow
        ? {
            tokens: Math.max(held.tokens, lease.granted.tokens - spent.tokens),
            micros: Math.max(held.micros, lease.granted.micros - spent.micros),
          }
        : { ...held };
      lease.renewing = { tokens: spent.tokens + keep.tokens, micros: spent.micros + keep.micros };
      const renewal: LeaseRenewal = {
        line,
        spent: { ...spent },
        keep,
        ask: { ...asking },
        chunk: grow ? { tokens: largest.tokens * requests, micros: largest.micros * requests } : none(),
        holdUntil: Math.max(lease.heldUntil, lease.askingUntil, now + IDLE_LEASE_MS),
      };
      lease.asking = none();
      lease.askingUntil = 0;
      return { lease, renewal };
    });
    let grants: LeaseGrant[];
    try {
      grants = await store.renew(
        holder,
        now,
        sent.map(({ renewal }) => renewal),
      );
    } finally {
      for (const { lease } of sent) lease.renewing = undefined;
    }
    for (const [index, { lease, renewal }] of sent.entries()) {
      const { others, granted } = grants[index]!;
      // What was settled while the call was out is added next time.
      lease.spent.tokens -= renewal.spent.tokens;
      lease.spent.micros -= renewal.spent.micros;
      lease.others = others;
      lease.granted = granted;
      lease.exhausted =
        (lease.line.tokens !== undefined && granted.tokens < renewal.keep.tokens + renewal.ask.tokens) ||
        (lease.line.micros !== undefined && granted.micros < renewal.keep.micros + renewal.ask.micros);
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

  /** Reserves in the leases, asking the store for more room where one has none left. */
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

  const fallBack = (error: unknown) =>
    log.warn({ err: error }, `budget counters unavailable in ${where}; counting here`);

  /** Adds what was used, gives idle leases' spare room back, keeps active ones a step ahead. */
  const syncAll = async (closing: boolean) => {
    const synced: Array<Promise<void>> = [];
    const now = Date.now();
    for (const [id, lease] of leases) {
      // A reservation never settled (its request was lost) stops holding room once it expires.
      for (const [reservation, { amount, expiresAt }] of lease.inFlight) {
        if (expiresAt <= now) release(lease, reservation, amount);
      }
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
      return reserveShared(leased, id, amount, expiresAt, now).catch(async (error: unknown) => {
        fallBack(error);
        const reservation = await local.reserve(lines, id, amount, expiresAt, now);
        // Only an admitted request settles, and so takes its id out again.
        if (reservation.refused === undefined) localIds.add(id);
        return reservation;
      });
    },
    settle(lines, id, used) {
      for (const line of lines) {
        const lease = leaseOf(line);
        const current = lease.inFlight.get(id);
        if (current) release(lease, id, current.amount);
        add(lease.spent, used);
      }
      if (localIds.delete(id)) return local.settle(lines, id, used);
    },
    async read(ids) {
      try {
        const stored = await store.read(ids);
        return stored.map((amount, index) => {
          const unsent = leases.get(ids[index]!)?.spent;
          return { tokens: amount.tokens + (unsent?.tokens ?? 0), micros: amount.micros + (unsent?.micros ?? 0) };
        });
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
