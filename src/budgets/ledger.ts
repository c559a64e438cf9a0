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

/**
 * Where budget counters live: in this process, in the database, or in Redis. Every operation on a
 * request's counters is atomic across them, so concurrent requests of one user see each other's
 * reservations.
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
  ): Promise<Reservation>;
  /** Drops the reservation `id` and adds what the request actually used. */
  settle(lines: readonly CounterLine[], id: string, used: Amount): Promise<void>;
  /** Used so far (without reservations) on each counter, for the account page. */
  read(counters: readonly string[]): Promise<Amount[]>;
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
  endsAt: number;
  reservations: Map<string, { amount: Amount; expiresAt: number }>;
}

/** Counters of one process: for a single gateway, and for tests. */
export function memoryLedger(): Ledger {
  const counters = new Map<string, MemoryCounter>();
  const counterOf = (line: CounterLine) => {
    let counter = counters.get(line.id);
    if (!counter) {
      counter = { used: { tokens: 0, micros: 0 }, endsAt: line.endsAt, reservations: new Map() };
      counters.set(line.id, counter);
    }
    return counter;
  };
  const totalOf = (counter: MemoryCounter, now: number): Amount => {
    const total = { ...counter.used };
    for (const [id, held] of counter.reservations) {
      if (held.expiresAt <= now) counter.reservations.delete(id);
      else {
        total.tokens += held.amount.tokens;
        total.micros += held.amount.micros;
      }
    }
    return total;
  };
  return {
    async reserve(lines, id, amount, expiresAt, now) {
      const totals = lines.map((line) => totalOf(counterOf(line), now));
      const refused = lines.findIndex((line, index) => !hasRoom(line, totals[index]!));
      if (refused >= 0) return { refused, totals };
      for (const [index, line] of lines.entries()) {
        const counter = counterOf(line);
        const held = counter.reservations.get(id)?.amount ?? { tokens: 0, micros: 0 };
        counter.reservations.set(id, {
          amount: { tokens: held.tokens + amount.tokens, micros: held.micros + amount.micros },
          expiresAt,
        });
        totals[index] = {
          tokens: totals[index]!.tokens + amount.tokens,
          micros: totals[index]!.micros + amount.micros,
        };
      }
      return { totals };
    },
    async settle(lines, id, used) {
      for (const line of lines) {
        const counter = counterOf(line);
        counter.reservations.delete(id);
        counter.used.tokens += used.tokens;
        counter.used.micros += used.micros;
      }
    },
    async read(ids) {
      return ids.map((id) => ({ ...(counters.get(id)?.used ?? { tokens: 0, micros: 0 }) }));
    },
  };
}
