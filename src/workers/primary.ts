import cluster, { type Worker } from 'node:cluster';
import { createServer } from 'node:net';
import { countsBudgetsInProcess, processLedger } from '../budgets/setup.js';
import type { Config } from '../config/index.js';
import { memoryFailureCounter } from '../identity/failure-limiter.js';
import { memoryWindowCounter } from '../limits/rate-limiter.js';
import type { Logger } from '../log.js';
import { openStorage } from '../storage/database.js';
import { GatehouseError } from '../errors.js';
import {
  isGatehouseMessage,
  WORKER_PORT_ENV,
  WORKER_SLOT_ENV,
  type PrimaryMessage,
  type SharedAnswer,
  type SharedOp,
  type WorkerMessage,
} from './messages.js';

/** A crashed worker is replaced after this long, doubled after each crash in a row, up to the cap. */
const FIRST_RESTART_DELAY_MS = 100;
const MAX_RESTART_DELAY_MS = 10_000;
/** A worker that ran this long had not been crash-looping: its replacement starts at the first delay. */
const STABLE_AFTER_MS = 30_000;
/** Workers still running this long after the grace period are killed. */
const STOP_MARGIN_MS = 5_000;

/**
 * The primary of `gateway.workers: N`: it serves no request. It starts N workers that each listen on
 * the one port with SO_REUSEPORT, so the kernel spreads connections and the primary stays off the
 * data path; it replaces a worker that dies, keeps the counters that must be global (rate limits,
 * failed sign-ins, budgets on SQLite) in its memory for all of them, relays change notices, serves
 * the metrics port with every worker's figures summed, and on SIGTERM lets every worker drain
 * before exiting.
 */
export async function runPrimary(config: Config, log: Logger, count: number): Promise<void> {
  // Migrated once here, so N workers opening the database at once find nothing to apply. On
  // SQLite without Redis the primary also keeps the budget counters, written to the database behind.
  const storage =
    config.database.auto_migrate || countsBudgetsInProcess(config) ? await openStorage(config.database) : undefined;
  const budgetLedger = storage && processLedger(config, storage, log);
  if (storage && !budgetLedger) await storage.close();
  const port = config.gateway.port || (await pickPort(config.gateway.host));
  const windows = memoryWindowCounter();
  const failures = memoryFailureCounter();
  const slots = new Map<number, Worker>();
  const ready = new Set<Worker>();
  const crashes = new Map<number, number>();
  let stopping = false;

  const broadcast = (message: PrimaryMessage, except?: Worker) => {
    for (const worker of slots.values()) if (worker !== except && worker.isConnected()) worker.send(message);
  };
  const announceReadiness = () => broadcast({ gatehouse: 'workers', ready: ready.size, wanted: count });

  const perform = async (op: SharedOp): Promise<SharedAnswer> => {
    switch (op.op) {
      case 'window_add':
        return windows.add(op.key, op.window, op.amount);
      case 'window_read':
        return windows.read(op.key, op.window);
      case 'failure_add': {
        await failures.add(op.address, op.now);
        const { failures: total, resetsInMs } = await failures.read(op.address, op.now);
        broadcast({ gatehouse: 'failures', address: op.address, failures: total, endsAt: op.now + resetsInMs });
        return total;
      }
    }
    if (!budgetLedger) {
      throw new GatehouseError(
        'WORKER_NO_BUDGET_LEDGER',
        'the primary keeps no budget counters with this configuration',
      );
    }
    if (op.op === 'budget_reserve')
      return budgetLedger.reserve(op.lines, op.reservation, op.amount, op.expiresAt, op.now);
    if (op.op === 'budget_settle') {
      await budgetLedger.settle(op.lines, op.reservation, op.used);
      return null;
    }
    return budgetLedger.read(op.counters);
  };

  const start = (slot: number) => {
    const worker = cluster.fork({ [WORKER_SLOT_ENV]: String(slot), [WORKER_PORT_ENV]: String(port) });
    const startedAt = Date.now();
    slots.set(slot, worker);
    worker.on('message', (message: unknown) => {
      if (!isGatehouseMessage<WorkerMessage>(message)) return;
      if (message.gatehouse === 'count') {
        const answers: Array<[number, SharedAnswer]> = [];
        const errors: Array<[number, string]> = [];
        void Promise.all(
          message.batch.map((op) =>
            perform(op).then(
              (value) => void answers.push([op.id, value]),
              (error: unknown) => void errors.push([op.id, error instanceof Error ? error.message : String(error)]),
            ),
          ),
        ).then(() => worker.isConnected() && worker.send({ gatehouse: 'counted', answers, errors }));
      } else if (message.gatehouse === 'change') {
        broadcast({ gatehouse: 'change', change: message.change }, worker);
      } else {
        ready.add(worker);
        announceReadiness();
      }
    });
    worker.on('exit', (code, signal) => {
      ready.delete(worker);
      if (slots.get(slot) === worker) slots.delete(slot);
      announceReadiness();
      if (stopping) return;
      const inARow = Date.now() - startedAt > STABLE_AFTER_MS ? 0 : (crashes.get(slot) ?? 0);
      crashes.set(slot, inARow + 1);
      const delay = Math.min(MAX_RESTART_DELAY_MS, FIRST_RESTART_DELAY_MS * 2 ** inARow);
      log.error(
        { worker: slot, pid: worker.process.pid, code, signal, restartInMs: delay },
        'worker exited; replacing it',
      );
      setTimeout(() => !stopping && start(slot), delay);
    });
  };

  for (let slot = 1; slot <= count; slot++) start(slot);
  const { metrics_port: metricsPort, metrics_host: metricsHost } = config.gateway;
  const metricsServer =
    metricsPort === undefined
      ? undefined
      : await import('../metrics/metrics.js').then(({ serveMetrics, workersMetrics }) =>
          serveMetrics(workersMetrics(), metricsHost, metricsPort),
        );
  log.info(
    { workers: count, port, pid: process.pid, metrics: metricsServer && `${metricsHost}:${metricsPort}` },
    'gatehouse primary started its workers',
  );

  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, workers: slots.size }, 'stopping every worker');
    metricsServer?.close();
    const exits = [...slots.values()].map(
      (worker) =>
        new Promise<number>((resolve) => {
          if (worker.isDead()) return resolve(worker.process.exitCode ?? 0);
          worker.once('exit', (code) => resolve(code ?? 1));
          // Each worker drains as a lone gateway does: it stops accepting, lets requests and streams
          // finish within gateway.shutdown_grace_seconds, then exits.
          worker.process.kill('SIGTERM');
        }),
    );
    const killer = setTimeout(
      () => slots.forEach((worker) => worker.process.kill('SIGKILL')),
      config.gateway.shutdown_grace_seconds * 1000 + STOP_MARGIN_MS,
    );
    const codes = await Promise.all(exits);
    clearTimeout(killer);
    // What the workers settled last is written before the process ends.
    await budgetLedger?.close?.();
    await storage?.close();
    log.info('stopped');
    process.exit(codes.every((code) => code === 0) ? 0 : 1);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

/**
 * Port 0 means "any free port", but each worker's own SO_REUSEPORT socket would get a different
 * one: the primary picks it once for all.
 */
function pickPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}
