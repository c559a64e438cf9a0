import { sql } from 'kysely';
import type { Db } from '../storage/database.js';
import type { Logger } from '../log.js';
import { grantOn, leaseLedger, type LeaseGrant, type LeaseRenewal, type LeaseStore } from './lease-ledger.js';
import type { Amount, CounterStore, Ledger } from './ledger.js';

/**
 * Counters in the database, shared by every replica using it, which each admit requests into
 * leases of room held there (lease-ledger.ts): a lease is a row of budget_reservations under the
 * replica's holder id. A renewal locks the counter rows it touches, in id order so two replicas
 * never wait on each other (SQLite runs one write transaction at a time), so two replicas cannot
 * both take the last room.
 */
export function sqlLedger(db: Db, kind: 'sqlite' | 'postgres', log: Logger): Ledger {
  return leaseLedger(sqlLeaseStore(db, kind), log, 'the database');
}

function sqlLeaseStore(db: Db, kind: 'sqlite' | 'postgres'): LeaseStore {
  return {
    renew: (holder, now, renewals) =>
      db.transaction().execute(async (trx) => {
        // A renewal holds the counter rows locked until it commits. On PostgreSQL it commits
        // without waiting for its WAL to reach the disk: a database crash can then lose the
        // counters' last fraction of a second (wal_writer_delay), never leave them inconsistent.
        if (kind === 'postgres') await sql`SET LOCAL synchronous_commit = off`.execute(trx);
        const grants = new Map<string, LeaseGrant>();
        for (const renewal of [...renewals].sort((a, b) => (a.line.id < b.line.id ? -1 : 1))) {
          grants.set(renewal.line.id, await renewOne(trx, holder, now, renewal));
        }
        return renewals.map((renewal) => grants.get(renewal.line.id)!);
      }),
    read: (ids) => readCounters(db, ids),
  };
}

/** Adds one counter's use, drops the other replicas' lapsed leases, and sets this replica's. */
async function renewOne(trx: Db, holder: string, now: number, renewal: LeaseRenewal): Promise<LeaseGrant> {
  const { line, spent, keep, ask, chunk, holdUntil } = renewal;
  // Inserting or adding locks the row: the lease below is decided on counts nobody else changes.
  const used = await addToCounter(trx, line.id, line.endsAt, spent);
  await trx
    .deleteFrom('budget_reservations')
    .where('counter', '=', line.id)
    .where('id', '!=', holder)
    .where('expires_at', '<=', now)
    .execute();
  const held = await trx
    .selectFrom('budget_reservations')
    .select([sql<number>`coalesce(sum(tokens), 0)`.as('tokens'), sql<number>`coalesce(sum(micros), 0)`.as('micros')])
    .where('counter', '=', line.id)
    .where('id', '!=', holder)
    .executeTakeFirstOrThrow();
  const others = {
    tokens: Number(used.tokens) + Number(held.tokens),
    micros: Number(used.micros) + Number(held.micros),
  };
  const granted = {
    tokens: grantOn(line.tokens, others.tokens, keep.tokens, ask.tokens, chunk.tokens),
    micros: grantOn(line.micros, others.micros, keep.micros, ask.micros, chunk.micros),
  };
  if (granted.tokens === 0 && granted.micros === 0) {
    await trx.deleteFrom('budget_reservations').where('counter', '=', line.id).where('id', '=', holder).execute();
  } else {
    await trx
      .insertInto('budget_reservations')
      .values({ id: holder, counter: line.id, tokens: granted.tokens, micros: granted.micros, expires_at: holdUntil })
      .onConflict((conflict) =>
        conflict.columns(['counter', 'id']).doUpdateSet((eb) => ({
          tokens: eb.ref('excluded.tokens'),
          micros: eb.ref('excluded.micros'),
          expires_at: eb.ref('excluded.expires_at'),
        })),
      )
      .execute();
  }
  return { others, granted };
}

/** Adds `amount` to the counter row, creating it when missing; answers the row's new totals. */
function addToCounter(trx: Db, counter: string, endsAt: number, amount: Amount) {
  return trx
    .insertInto('budget_counters')
    .values({ counter, tokens: amount.tokens, micros: amount.micros, ends_at: endsAt })
    .onConflict((conflict) =>
      conflict.column('counter').doUpdateSet((eb) => ({
        tokens: eb('budget_counters.tokens', '+', eb.ref('excluded.tokens')),
        micros: eb('budget_counters.micros', '+', eb.ref('excluded.micros')),
      })),
    )
    .returning(['tokens', 'micros'])
    .executeTakeFirstOrThrow();
}

/** Each counter's use, zero for one without a row. */
async function readCounters(db: Db, ids: readonly string[]): Promise<Amount[]> {
  if (ids.length === 0) return [];
  const rows = await db.selectFrom('budget_counters').selectAll().where('counter', 'in', ids).execute();
  return ids.map((id) => {
    const row = rows.find((r) => r.counter === id);
    return { tokens: Number(row?.tokens ?? 0), micros: Number(row?.micros ?? 0) };
  });
}

/** budget_counters as the store of a write-behind ledger (a single gateway on SQLite). */
export function sqlCounterStore(db: Db): CounterStore {
  return {
    load: (ids) => readCounters(db, ids),
    add: (deltas) =>
      db.transaction().execute(async (trx) => {
        for (const delta of deltas) await addToCounter(trx, delta.id, delta.endsAt, delta.amount);
      }),
  };
}
