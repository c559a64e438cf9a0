import type { Amount, CounterLine, Reservation } from '../budgets/ledger.js';
import type { Change } from '../storage/changes.js';

/**
 * What a worker and the primary say to each other over the cluster's IPC channel. Every message
 * carries `gatehouse` so it is never taken for one of Node's own cluster messages.
 */

/** A counting operation the primary performs for a worker, so every worker sees one count. */
export type CountOp =
  | { op: 'window_add'; key: string; window: number; amount: number }
  | { op: 'window_read'; key: string; window: number }
  | { op: 'failure_add'; address: string; now: number };

/**
 * A budget operation on the primary's one ledger (SQLite without Redis), so a budget is one budget
 * across workers: the arguments of `Ledger.reserve`, `settle` and `read`.
 */
export type BudgetOp =
  | {
      op: 'budget_reserve';
      lines: readonly CounterLine[];
      reservation: string;
      amount: Amount;
      expiresAt: number;
      now: number;
    }
  | { op: 'budget_settle'; lines: readonly CounterLine[]; reservation: string; used: Amount }
  | { op: 'budget_read'; counters: readonly string[] };

export type SharedOp = CountOp | BudgetOp;

/** A count, a reservation's outcome, counters read, or null (a settlement). */
export type SharedAnswer = number | Reservation | Amount[] | null;

export type WorkerMessage =
  | { gatehouse: 'count'; batch: Array<SharedOp & { id: number }> }
  | { gatehouse: 'change'; change: Change }
  | { gatehouse: 'ready' };

export type PrimaryMessage =
  | {
      gatehouse: 'counted';
      answers: Array<[id: number, value: SharedAnswer]>;
      /** Operations that failed on the primary (the database behind the ledger), with why. */
      errors?: Array<[id: number, message: string]>;
    }
  | { gatehouse: 'change'; change: Change }
  | { gatehouse: 'failures'; address: string; failures: number; endsAt: number }
  | { gatehouse: 'workers'; ready: number; wanted: number };

/** The environment a worker is started with: its place among the workers and the port all share. */
export const WORKER_SLOT_ENV = 'GATEHOUSE_WORKER_SLOT';
export const WORKER_PORT_ENV = 'GATEHOUSE_WORKER_PORT';

export function isGatehouseMessage<T extends { gatehouse: string }>(message: unknown): message is T {
  return typeof message === 'object' && message !== null && 'gatehouse' in message;
}
