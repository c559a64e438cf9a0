import cluster from 'node:cluster';
import { LRUCache } from 'lru-cache';
import type { Amount, Ledger, Reservation } from '../budgets/ledger.js';
import { GatehouseError } from '../errors.js';
import type { ReadinessCheck } from '../http/health.js';
import type { FailureCounter } from '../identity/failure-limiter.js';
import type { WindowCounter } from '../limits/rate-limiter.js';
import { growingCapacity } from '../storage/capacity.js';
import type { Change, ChangeRelay } from '../storage/changes.js';
import {
  isGatehouseMessage,
  WORKER_PORT_ENV,
  WORKER_SLOT_ENV,
  type PrimaryMessage,
  type SharedAnswer,
  type SharedOp,
  type WorkerMessage,
} from './messages.js';

/** A worker's line to the primary: the counters every worker shares, change notices, readiness. */
export interface WorkerLink {
  /** 1..N, stable across replacements: the worker's place, shown in its log lines. */
  slot: number;
  /** The port every worker listens on (SO_REUSEPORT); the primary chose it when the config says 0. */
  port: number;
  windowCounter: WindowCounter;
  failureCounter: FailureCounter;
  /** The primary's budget ledger, for budgets on SQLite without Redis. */
  budgetLedger: Ledger;
  relay: ChangeRelay;
  /** Ready only while every worker is: a load balancer sees one service. */
  readiness: ReadinessCheck;
  /** Tells the primary this worker is listening. */
  listening(): void;
}

let link: WorkerLink | undefined | null = null;

/** The link when this process is a worker started by `gatehouse serve` with gateway.workers > 1. */
export function workerLink(): WorkerLink | undefined {
  if (link === null) link = cluster.isWorker && process.env[WORKER_SLOT_ENV] ? connect() : undefined;
  return link;
}

function connect(): WorkerLink {
  const send = (message: WorkerMessage) => process.send?.(message);
  const waiting = new Map<number, { resolve: (value: SharedAnswer) => void; reject: (error: Error) => void }>();
  let nextId = 0;
  let batch: Array<SharedOp & { id: number }> = [];
  // Operations asked for in one turn of the event loop travel in one message: under load a round
  // trip to the primary is shared by many requests instead of costing a write and a wake-up each.
  const flush = () => {
    const ops = batch;
    batch = [];
    send({ gatehouse: 'count', batch: ops });
  };
  /** The answer's type is the one the primary gives for that op (see SharedAnswer). */
  const ask = <T extends SharedAnswer>(op: SharedOp) =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve: resolve as (value: SharedAnswer) => void, reject });
      if (batch.push({ ...op, id }) === 1) setImmediate(flush);
    });
  const count = (op: SharedOp) => ask<number>(op);
  // The failed-auth windows of every address, as the primary announces them: checked on every key
  // request, so they are read here without a round trip; only failures, which are rare, travel.
  const failures = new LRUCache<string, { failures: number; endsAt: number }>(growingCapacity(100_000));
  const listeners: Array<(change: Change) => void> = [];
  let workers = { ready: 0, wanted: 1 };

  process.on('message', (message: unknown) => {
    if (!isGatehouseMessage<PrimaryMessage>(message)) return;
    switch (message.gatehouse) {
      case 'counted':
        for (const [id, value] of message.answers) {
          waiting.get(id)?.resolve(value);
          waiting.delete(id);
        }
        for (const [id, reason] of message.errors ?? []) {
          waiting.get(id)?.reject(new GatehouseError('WORKER_PRIMARY_FAILED', reason));
          waiting.delete(id);
        }
        break;
      case 'failures':
        failures.set(message.address, { failures: message.failures, endsAt: message.endsAt });
        break;
      case 'change':
        for (const listener of listeners) listener(message.change);
        break;
      case 'workers':
        workers = { ready: message.ready, wanted: message.wanted };
        break;
    }
  });
  process.on('disconnect', () => {
    const lost = new GatehouseError('WORKER_PRIMARY_GONE', 'the gatehouse primary process has exited');
    for (const { reject } of waiting.values()) reject(lost);
    waiting.clear();
  });

  return {
    slot: Number(process.env[WORKER_SLOT_ENV]),
    port: Number(process.env[WORKER_PORT_ENV]),
    windowCounter: {
      add: (key, window, amount) => count({ op: 'window_add', key, window, amount }),
      read: (key, window) => count({ op: 'window_read', key, window }),
    },
    failureCounter: {
      read: async (address, now) => {
        const window = failures.get(address);
        if (!window || now >= window.endsAt) return { failures: 0, resetsInMs: 0 };
        return { failures: window.failures, resetsInMs: window.endsAt - now };
      },
      // The primary announces the new window to every worker before it answers this one.
      add: async (address, now) => void (await count({ op: 'failure_add', address, now })),
    },
    budgetLedger: {
      reserve: (lines, reservation, amount, expiresAt, now) =>
        ask<Reservation>({ op: 'budget_reserve', lines, reservation, amount, expiresAt, now }),
      settle: async (lines, reservation, used) =>
        void (await ask<null>({ op: 'budget_settle', lines, reservation, used })),
      read: (counters) => ask<Amount[]>({ op: 'budget_read', counters }),
    },
    relay: {
      publish: (change) => send({ gatehouse: 'change', change }),
      subscribe: (listener) => void listeners.push(listener),
    },
    readiness: {
      name: 'workers',
      check: async () =>
        workers.ready >= workers.wanted ? undefined : `${workers.ready} of ${workers.wanted} workers are ready`,
    },
    listening: () => send({ gatehouse: 'ready' }),
  };
}
