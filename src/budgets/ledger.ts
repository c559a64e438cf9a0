/** Tokens and millionths of budgets.currency. */
export interface Amount {
  tokens: number;
  micros: number;
}

/** One counter a request is charged to ("user:ID|2026-12"), with the limits that apply to it. */
export interface CounterLine {
  id: string;
  /** The end of its period window: counters are kept a while past it, then may be dropped. */
  endsAt: number;
  /** Undefined where that measure is not limited on this counter. */
  tokens?: number;
  micros?: number;
}

export interface Reservation {
  /** The index of the first counter without room left; undefined when the reservation was made. */
  refused?: number;
  /** Per counter, used plus everyone's unexpired reservations (this one included when made). */
  totals: Amount[];
}

/** A value now, or a promise of it: a ledger answers at once when the counters it needs are in this process. */
export type MaybePromise<T> = T | Promise<T>;

/** `next` applied to the answer: at once when it is a value, once it resolves when it is a promise. */
export function whenAnswered<T, R>(answer: MaybePromise<T>, next: (value: T) => R): MaybePromise<R> {
  return answer instanceof Promise ? answer.then(next) : next(answer);
}

/**
 * Where budget counters live: in this process, in the database, or in Redis. Every operation on a
 * request's counters is atomic across them, so concurrent requests of one user see each other's
 * reservations. Reserving and settling answer at once (no promise) when they can, as the
 * in-process counters and a Redis lease with room do: on the API-key path every promise and
 * turn of the microtask queue shows in the CPU per request.
 */
export interface Ledger {
  /**
   * Reserves `amount` on every counter under `id` (adding to a reservation `id` already holds),
   * but only while each counter has room: used + reserved below each of its limits. Otherwise
   * nothing changes. Reservations not settled by `expiresAt` stop counting.
   */
  reserve(
    lines: readonly CounterLine[],
    id: string,
    amount: Amount,
    expiresAt: number,
    now: number,
  ): MaybePromise<Reservation>;
  /** Drops the reservation `id` and adds what the request actually used. */
  settle(lines: readonly CounterLine[], id: string, used: Amount): MaybePromise<void>;
  /** Used so far (without reservations) on each counter, for the account page. */
  read(counters: readonly string[]): Promise<Amount[]>;
  /** Writes what is held back, where the ledger holds anything back. */
  close?(): Promise<void>;
}

/** True when every limited measure of the counter is below its limit. */
export function hasRoom(line: CounterLine, total: Amount): boolean {
  return (
    (line.tokens === undefined || total.tokens < line.tokens) &&
    (line.micros === undefined || total.micros < line.micros)
  );
}

interface MemoryCounter {
  used: Amount;
  /** The end of its window, as the requests' lines name it; 0 while it was only read (the account page). */
  endsAt: number;
  reservations: Map<string, { amount: Amount; expiresAt: number }>;
  /** The sum of `reservations`, kept as they change so a check costs no walk over them. */
  reserved: Amount;
  /** The earliest expiry among `reservations`: until then none has lapsed and `reserved` is current. */
  nextExpiry: number;
}

/** Drops the counter's reservations that expired by `now` (their replica died) and sums the rest again. */
function dropLapsed(counter: MemoryCounter, now: number): void {
  counter.reserved = { tokens: 0, micros: 0 };
  counter.nextExpiry = Infinity;
  for (const [id, held] of counter.reservations) {
    if (held.expiresAt <= now) counter.reservations.delete(id);
    else {
      counter.reserved.tokens += held.amount.tokens;
      counter.reserved.micros += held.amount.micros;
      counter.nextExpiry = Math.min(counter.nextExpiry, held.expiresAt);
    }
  }
}

/** Counters of one process: for a single gateway, and for tests. */
export function memoryLedger(): Ledger {
  return new MemoryCounters();
}

/** The memory ledger's work, synchronous, so the write-behind ledger adds no promise per call. */
class MemoryCounters implements Ledger {
  private readonly counters = new Map<string, MemoryCounter>();
  /**
   * Drops from memory the counters whose window has ended, that hold no reservation and that
   * `keep` does not name (use not yet written): a long-running gateway would otherwise keep every
   * day's counter of every user. Returns their names.
   */
  dropEnded(now: number, keep: (id: string) => boolean): string[] {
    const dropped: string[] = [];
    for (const [id, counter] of this.counters) {
      if (counter.endsAt > 0 && counter.endsAt <= now && counter.reservations.size === 0 && !keep(id)) {
        this.counters.delete(id);
        dropped.push(id);
      }
    }
    return dropped;
  }

  private counterOf(line: CounterLine): MemoryCounter {
    let counter = this.counters.get(line.id);
    if (!counter) {
      counter = {
        used: { tokens: 0, micros: 0 },
        endsAt: line.endsAt,
        reservations: new Map(),
        reserved: { tokens: 0, micros: 0 },
        nextExpiry: Infinity,
      };
      this.counters.set(line.id, counter);
    } else if (line.endsAt > counter.endsAt) counter.endsAt = line.endsAt;
    return counter;
  }

  private totalOf(counter: MemoryCounter, now: number): Amount {
    if (now >= counter.nextExpiry) dropLapsed(counter, now);
    return {
      tokens: counter.used.tokens + counter.reserved.tokens,
      micros: counter.used.micros + counter.reserved.micros,
    };
  }

  reserveNow(lines: readonly CounterLine[], id: string, amount: Amount, expiresAt: number, now: number): Reservation {
    const counters = lines.map((line) => this.counterOf(line));
    const totals: Amount[] = [];
    let refused: number | undefined;
    for (let index = 0; index < lines.length; index++) {
      totals.push(this.totalOf(counters[index]!, now));
      if (refused === undefined && !hasRoom(lines[index]!, totals[index]!)) refused = index;
    }
    if (refused !== undefined) return { refused, totals };
    for (let index = 0; index < lines.length; index++) {
      const counter = counters[index]!;
      const held = counter.reservations.get(id);
      if (held) {
        held.amount.tokens += amount.tokens;
        held.amount.micros += amount.micros;
        held.expiresAt = expiresAt;
      } else counter.reservations.set(id, { amount: { tokens: amount.tokens, micros: amount.micros }, expiresAt });
      counter.reserved.tokens += amount.tokens;
      counter.reserved.micros += amount.micros;
      if (expiresAt < counter.nextExpiry) counter.nextExpiry = expiresAt;
      totals[index]!.tokens += amount.tokens;
      totals[index]!.micros += amount.micros;
    }
    return { totals };
  }

  settleNow(lines: readonly CounterLine[], id: string, used: Amount): void {
    for (const line of lines) {
      const counter = this.counterOf(line);
      const held = counter.reservations.get(id);
      if (held) {
        counter.reservations.delete(id);
        counter.reserved.tokens -= held.amount.tokens;
        counter.reserved.micros -= held.amount.micros;
      }
      counter.used.tokens += used.tokens;
      counter.used.micros += used.micros;
    }
  }

  readNow(ids: readonly string[]): Amount[] {
    return ids.map((id) => {
      const used = this.counters.get(id)?.used;
      return { tokens: used?.tokens ?? 0, micros: used?.micros ?? 0 };
    });
  }

  reserve(lines: readonly CounterLine[], id: string, amount: Amount, expiresAt: number, now: number) {
    return this.reserveNow(lines, id, amount, expiresAt, now);
  }

  settle(lines: readonly CounterLine[], id: string, used: Amount) {
    this.settleNow(lines, id, used);
  }

  async read(ids: readonly string[]) {
    return this.readNow(ids);
  }
}

/** Where a process's counters are kept between restarts. */
export interface CounterStore {
  load(ids: readonly string[]): Promise<Amount[]>;
  /** Adds each delta to its stored counter. */
  add(deltas: ReadonlyArray<{ id: string; endsAt: number; amount: Amount }>): Promise<void>;
}

const FLUSH_INTERVAL_MS = 2_000;

/**
 * The counters of one process kept in memory, loaded from `store` the first time each is used and
 * written back in batches every two seconds, off the request path (as usage rows are). For a
 * single gateway on SQLite: reservations live only in this process, so they end with it.
 */
export function writeBehindLedger(store: CounterStore, onError: (error: unknown) => void): Ledger {
  const memory = new MemoryCounters();
  const loaded = new Set<string>();
  const loading = new Map<string, Promise<void>>();
  let pending = new Map<string, { id: string; endsAt: number; amount: Amount }>();
  const load = (line: CounterLine) => {
    let loadingNow = loading.get(line.id);
    if (!loadingNow) {
      loadingNow = store.load([line.id]).then(([stored]) => {
        // Seeded as an earlier settlement of its own, so nothing is written back for it.
        if (stored && (stored.tokens || stored.micros)) memory.settleNow([line], '', stored);
        loaded.add(line.id);
        loading.delete(line.id);
      });
      loading.set(line.id, loadingNow);
    }
    return loadingNow;
  };
  /** Undefined once every counter is in memory: the usual case costs no promise. */
  const loadMissing = (lines: readonly CounterLine[]): Promise<unknown> | undefined => {
    let missing: CounterLine[] | undefined;
    for (const line of lines) if (!loaded.has(line.id)) (missing ??= []).push(line);
    return missing && Promise.all(missing.map(load));
  };
  const queue = (id: string, endsAt: number, amount: Amount) => {
    const current = pending.get(id);
    if (current) {
      current.amount.tokens += amount.tokens;
      current.amount.micros += amount.micros;
    } else pending.set(id, { id, endsAt, amount: { tokens: amount.tokens, micros: amount.micros } });
  };
  /** Writes under way: a slow database can have the timer's next flush start before one ends. */
  let writing = 0;
  const flush = async () => {
    if (pending.size === 0) return;
    const deltas = [...pending.values()];
    pending = new Map();
    writing++;
    try {
      await store.add(deltas);
    } catch (error) {
      // Kept for the next flush rather than lost.
      for (const delta of deltas) queue(delta.id, delta.endsAt, delta.amount);
      onError(error);
      return;
    } finally {
      writing--;
    }
    // A counter of an ended window is read again from the store if a late request needs it, so it
    // may leave memory only once the store holds all of its use (no other write out) and while no
    // load waits to go on with it.
    if (writing > 0 || loading.size > 0) return;
    for (const id of memory.dropEnded(Date.now(), (unwritten) => pending.has(unwritten))) loaded.delete(id);
  };
  const timer = setInterval(() => void flush(), FLUSH_INTERVAL_MS).unref();
  const settleNow = (lines: readonly CounterLine[], id: string, used: Amount) => {
    memory.settleNow(lines, id, used);
    for (const line of lines) queue(line.id, line.endsAt, used);
  };
  return {
    reserve(lines, id, amount, expiresAt, now) {
      const loading = loadMissing(lines);
      if (!loading) return memory.reserveNow(lines, id, amount, expiresAt, now);
      return loading.then(() => memory.reserveNow(lines, id, amount, expiresAt, now));
    },
    settle(lines, id, used) {
      const loading = loadMissing(lines);
      if (!loading) return settleNow(lines, id, used);
      return loading.then(() => settleNow(lines, id, used));
    },
    async read(ids) {
      await loadMissing(ids.map((id) => ({ id, endsAt: 0 })));
      return memory.readNow(ids);
    },
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}
