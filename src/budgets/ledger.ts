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
function hasRoom(line: CounterLine, total: Amount): boolean {
  return (
    (line.tokens === undefined || total.tokens < line.tokens) &&
    (line.micros === undefined || total.micros < line.micros)
  );
}

/** Where a process's counters are kept between restarts. */
export interface CounterStore {
  load(ids: readonly string[]): Promise<Amount[]>;
  /** Adds each delta to its stored counter. */
  add(deltas: ReadonlyArray<{ id: string; endsAt: number; amount: Amount }>): Promise<void>;
}

const FLUSH_INTERVAL_MS = 2_000;
/** Times a settlement whose counters could not be loaded is tried, FLUSH_INTERVAL_MS apart. */
const SETTLE_ATTEMPTS = 5;

/** One counter kept in this process. Measures are fields, not Amount objects: it is read on every request. */
interface ProcessCounter {
  id: string;
  /** The end of its window, as the requests' lines name it; 0 while it was only read (the account page). */
  endsAt: number;
  usedTokens: number;
  usedMicros: number;
  /** The sum of the reservations held on it. */
  reservedTokens: number;
  reservedMicros: number;
  /** How many reservations hold room on it: it leaves memory only at 0. */
  holds: number;
  /** Use added since the store was last written (write-behind only). */
  unwrittenTokens: number;
  unwrittenMicros: number;
  unwritten: boolean;
}

/** One request's reservation: the same amount on each of its counters. */
interface Hold {
  counters: readonly ProcessCounter[];
  tokens: number;
  micros: number;
  expiresAt: number;
}

/** Counters of one process, kept in memory only: for the Redis ledger while Redis is away, and for tests. */
export function memoryLedger(): Ledger {
  return new ProcessLedger();
}

/**
 * The counters of one process kept in memory, loaded from `store` the first time each is used and
 * written back in batches every two seconds, off the request path (as usage rows are). For a
 * single gateway on SQLite: reservations live only in this process, so they end with it.
 */
export function writeBehindLedger(store: CounterStore, onError: (error: unknown) => void): Ledger {
  return new ProcessLedger({ store, onError });
}

/**
 * The ledger of counters in this process. Each request costs one lookup per counter and one for
 * its reservation, and no promise once its counters are in memory: this runs on every request of
 * a gateway with budgets, where each lookup and object showed in the CPU per request.
 */
class ProcessLedger implements Ledger {
  private readonly counters = new Map<string, ProcessCounter>();
  /** Reservations by id; each id is reserved on the same counters every time (an admission, then its stream's steps). */
  private readonly holds = new Map<string, Hold>();
  /** No reservation expires before it, so none needs looking at until then. */
  private nextExpiry = Infinity;
  private readonly loading = new Map<string, Promise<void>>();
  /** The counters whose `unwritten` use the next flush writes. */
  private unwritten: ProcessCounter[] = [];
  /** Writes under way: a slow database can have the timer's next flush start before one ends. */
  private writing = 0;
  private readonly timer?: NodeJS.Timeout;

  constructor(private readonly backing?: { store: CounterStore; onError: (error: unknown) => void }) {
    if (backing) this.timer = setInterval(() => void this.flush(), FLUSH_INTERVAL_MS).unref();
  }

  reserve(lines: readonly CounterLine[], id: string, amount: Amount, expiresAt: number, now: number) {
    return whenAnswered(this.countersOf(lines), (counters) =>
      this.reserveOn(counters, lines, id, amount, expiresAt, now),
    );
  }

  settle(lines: readonly CounterLine[], id: string, used: Amount) {
    return this.settleTrying(lines, id, used, 1);
  }

  private settleTrying(lines: readonly CounterLine[], id: string, used: Amount, attempt: number): MaybePromise<void> {
    const counters = this.countersOf(lines);
    if (!(counters instanceof Promise)) return this.settleOn(counters, id, used);
    // Released only once the counters are here: a reservation waiting on the same load comes first.
    return counters.then(
      (loaded) => this.settleOn(loaded, id, used),
      (error: unknown) => {
        // A load that failed (the database busy) is tried again, so the use is not lost and the
        // reservation does not hold its room until it expires.
        if (attempt < SETTLE_ATTEMPTS) {
          setTimeout(
            () => void Promise.resolve(this.settleTrying(lines, id, used, attempt + 1)).catch(() => undefined),
            FLUSH_INTERVAL_MS,
          ).unref();
        }
        throw error;
      },
    );
  }

  async read(ids: readonly string[]) {
    const counters = await this.countersOf(ids.map((id) => ({ id, endsAt: 0 })));
    return counters.map((counter) => ({ tokens: counter.usedTokens, micros: counter.usedMicros }));
  }

  async close() {
    clearInterval(this.timer);
    await this.flush();
  }

  /** The counters of `lines`; a promise of them when some must first be read from the store. */
  private countersOf(lines: readonly CounterLine[]): MaybePromise<ProcessCounter[]> {
    const counters: ProcessCounter[] = [];
    let missing = false;
    for (const line of lines) {
      let counter = this.counters.get(line.id);
      if (!counter && !this.backing) {
        counter = newCounter(line.id, undefined);
        this.counters.set(line.id, counter);
      }
      if (!counter) missing = true;
      else {
        if (line.endsAt > counter.endsAt) counter.endsAt = line.endsAt;
        counters.push(counter);
      }
    }
    if (!missing) return counters;
    // Looked up again once loaded: a flush may have dropped another of them meanwhile.
    return Promise.all(lines.map((line) => this.load(line.id))).then(() => this.countersOf(lines));
  }

  private load(id: string): Promise<void> {
    let loading = this.loading.get(id);
    if (!loading) {
      const done = () => this.loading.delete(id);
      loading = this.backing!.store.load([id]).then(
        ([stored]) => {
          done();
          if (!this.counters.has(id)) this.counters.set(id, newCounter(id, stored));
        },
        // Not kept: the next request that needs the counter tries the store again.
        (error: unknown) => {
          done();
          throw error;
        },
      );
      this.loading.set(id, loading);
    }
    return loading;
  }

  private reserveOn(
    counters: readonly ProcessCounter[],
    lines: readonly CounterLine[],
    id: string,
    amount: Amount,
    expiresAt: number,
    now: number,
  ): Reservation {
    if (now >= this.nextExpiry) this.dropLapsed(now);
    const totals: Amount[] = [];
    let refused: number | undefined;
    for (let index = 0; index < counters.length; index++) {
      const counter = counters[index]!;
      const total = {
        tokens: counter.usedTokens + counter.reservedTokens,
        micros: counter.usedMicros + counter.reservedMicros,
      };
      totals.push(total);
      if (refused === undefined && !hasRoom(lines[index]!, total)) refused = index;
    }
    if (refused !== undefined) return { refused, totals };
    const hold = this.holds.get(id);
    if (hold) {
      hold.tokens += amount.tokens;
      hold.micros += amount.micros;
      hold.expiresAt = expiresAt;
    } else {
      this.holds.set(id, { counters, tokens: amount.tokens, micros: amount.micros, expiresAt });
      for (const counter of counters) counter.holds++;
    }
    if (expiresAt < this.nextExpiry) this.nextExpiry = expiresAt;
    for (let index = 0; index < counters.length; index++) {
      const counter = counters[index]!;
      counter.reservedTokens += amount.tokens;
      counter.reservedMicros += amount.micros;
      totals[index]!.tokens += amount.tokens;
      totals[index]!.micros += amount.micros;
    }
    return { totals };
  }

  private release(id: string, hold: Hold): void {
    this.holds.delete(id);
    for (const counter of hold.counters) {
      counter.reservedTokens -= hold.tokens;
      counter.reservedMicros -= hold.micros;
      counter.holds--;
    }
  }

  /** Releases the reservations that expired by `now` (their request never settled). */
  private dropLapsed(now: number): void {
    this.nextExpiry = Infinity;
    for (const [id, hold] of this.holds) {
      if (hold.expiresAt <= now) this.release(id, hold);
      else if (hold.expiresAt < this.nextExpiry) this.nextExpiry = hold.expiresAt;
    }
  }

  private settleOn(counters: readonly ProcessCounter[], id: string, used: Amount): void {
    const hold = this.holds.get(id);
    if (hold) this.release(id, hold);
    for (const counter of counters) {
      counter.usedTokens += used.tokens;
      counter.usedMicros += used.micros;
      if (this.backing) this.owe(counter, used);
    }
  }

  /** Adds `amount` to what the next flush writes for `counter`. */
  private owe(counter: ProcessCounter, amount: Amount): void {
    counter.unwrittenTokens += amount.tokens;
    counter.unwrittenMicros += amount.micros;
    if (!counter.unwritten) {
      counter.unwritten = true;
      this.unwritten.push(counter);
    }
  }

  private async flush(): Promise<void> {
    if (!this.backing || this.unwritten.length === 0) return;
    const counters = this.unwritten;
    this.unwritten = [];
    const deltas = counters.map((counter) => {
      const delta = {
        id: counter.id,
        endsAt: counter.endsAt,
        amount: { tokens: counter.unwrittenTokens, micros: counter.unwrittenMicros },
      };
      counter.unwrittenTokens = 0;
      counter.unwrittenMicros = 0;
      counter.unwritten = false;
      return delta;
    });
    this.writing++;
    try {
      await this.backing.store.add(deltas);
    } catch (error) {
      // Kept for the next flush rather than lost.
      for (const [index, counter] of counters.entries()) this.owe(counter, deltas[index]!.amount);
      this.backing.onError(error);
      return;
    } finally {
      this.writing--;
    }
    // A counter of an ended window is read again from the store if a late request needs it, so it
    // may leave memory only once the store holds all of its use (no other write out) and while no
    // load waits to go on with it.
    if (this.writing > 0 || this.loading.size > 0) return;
    const now = Date.now();
    for (const [id, counter] of this.counters) {
      if (counter.endsAt > 0 && counter.endsAt <= now && counter.holds === 0 && !counter.unwritten) {
        this.counters.delete(id);
      }
    }
  }
}

function newCounter(id: string, stored: Amount | undefined): ProcessCounter {
  return {
    id,
    endsAt: 0,
    usedTokens: stored?.tokens ?? 0,
    usedMicros: stored?.micros ?? 0,
    reservedTokens: 0,
    reservedMicros: 0,
    holds: 0,
    unwrittenTokens: 0,
    unwrittenMicros: 0,
    unwritten: false,
  };
}
