import { sql } from 'kysely';
import type { Db } from '../storage/database.js';
import { hasRoom, type Amount, type CounterStore, type Ledger } from './ledger.js';

/**
 * Counters in the database, shared by every replica using it. A reservation locks the request's
 * counter rows (PostgreSQL `FOR UPDATE`, in id order so two requests never wait on each other;
 * SQLite runs one write transaction at a time), so two replicas cannot both take the last room.
 */
export function sqlLedger(db: Db, kind: 'sqlite' | 'postgres'): Ledger {
  /**
   * A budget transaction holds the user's counter rows locked until it commits. On PostgreSQL it
   * commits without waiting for its WAL to reach the disk: otherwise every admission of one user
   * waits for the previous one's flush. A database crash can then lose the counters' last fraction
   * of a second (wal_writer_delay), never leave them inconsistent.
   */
  const unflushed = async (trx: Db) => {
    if (kind === 'postgres') await sql`SET LOCAL synchronous_commit = off`.execute(trx);
  };
  return {
    reserve: (lines, id, amount, expiresAt, now) =>
      db.transaction().execute(async (trx) => {
        await unflushed(trx);
        const ids = lines.map((line) => line.id);
        await trx
          .insertInto('budget_counters')
          .values(lines.map((line) => ({ counter: line.id, tokens: 0, micros: 0, ends_at: line.endsAt })))
          .onConflict((conflict) => conflict.column('counter').doNothing())
          .execute();
        let used = trx
          .selectFrom('budget_counters')
          .select(['counter', 'tokens', 'micros'])
          .where('counter', 'in', ids);
        if (kind === 'postgres') used = used.orderBy('counter').forUpdate();
        const rows = await used.execute();
        await trx
          .deleteFrom('budget_reservations')
          .where('counter', 'in', ids)
          .where('expires_at', '<=', now)
          .execute();
        const held = await trx
          .selectFrom('budget_reservations')
          .select(['counter', sql<number>`sum(tokens)`.as('tokens'), sql<number>`sum(micros)`.as('micros')])
          .where('counter', 'in', ids)
          .groupBy('counter')
          .execute();
        const totals = lines.map((line): Amount => {
          const row = rows.find((r) => r.counter === line.id);
          const reserved = held.find((r) => r.counter === line.id);
          return {
            tokens: Number(row?.tokens ?? 0) + Number(reserved?.tokens ?? 0),
            micros: Number(row?.micros ?? 0) + Number(reserved?.micros ?? 0),
          };
        });
        const refused = lines.findIndex((line, index) => !hasRoom(line, totals[index]!));
        if (refused >= 0) return { refused, totals };
        await trx
          .insertInto('budget_reservations')
          .values(
            ids.map((counter) => ({
              id,
              counter,
              tokens: amount.tokens,
              micros: amount.micros,
              expires_at: expiresAt,
            })),
          )
          .onConflict((conflict) =>
            conflict.columns(['counter', 'id']).doUpdateSet((eb) => ({
              tokens: eb('budget_reservations.tokens', '+', eb.ref('excluded.tokens')),
              micros: eb('budget_reservations.micros', '+', eb.ref('excluded.micros')),
              expires_at: eb.ref('excluded.expires_at'),
            })),
          )
          .execute();
        return {
          totals: totals.map((total) => ({
            tokens: total.tokens + amount.tokens,
            micros: total.micros + amount.micros,
          })),
        };
      }),
    settle: (lines, id, used) =>
      db.transaction().execute(async (trx) => {
        await unflushed(trx);
        const ids = lines.map((line) => line.id);
        await trx.deleteFrom('budget_reservations').where('id', '=', id).where('counter', 'in', ids).execute();
        await addTo(
          trx,
          lines.map((line) => ({ id: line.id, endsAt: line.endsAt, amount: used })),
        );
      }),
    async read(ids) {
      if (ids.length === 0) return [];
      const rows = await db.selectFrom('budget_counters').selectAll().where('counter', 'in', ids).execute();
      return ids.map((id) => {
        const row = rows.find((r) => r.counter === id);
        return { tokens: Number(row?.tokens ?? 0), micros: Number(row?.micros ?? 0) };
      });
    },
  };
}

/** Adds each delta to its counter row, creating it when missing. */
async function addTo(trx: Db, deltas: ReadonlyArray<{ id: string; endsAt: number; amount: Amount }>): Promise<void> {
  for (const delta of deltas) {
    await trx
      .insertInto('budget_counters')
      .values({ counter: delta.id, tokens: delta.amount.tokens, micros: delta.amount.micros, ends_at: delta.endsAt })
      .onConflict((conflict) =>
        conflict.column('counter').doUpdateSet((eb) => ({
          tokens: eb('budget_counters.tokens', '+', eb.ref('excluded.tokens')),
          micros: eb('budget_counters.micros', '+', eb.ref('excluded.micros')),
        })),
      )
      .execute();
  }
}

/** budget_counters as the store of a write-behind ledger (a single gateway on SQLite). */
export function sqlCounterStore(db: Db): CounterStore {
  return {
    async load(ids) {
      const rows = await db.selectFrom('budget_counters').selectAll().where('counter', 'in', ids).execute();
      return ids.map((id) => {
        const row = rows.find((r) => r.counter === id);
        return { tokens: Number(row?.tokens ?? 0), micros: Number(row?.micros ?? 0) };
      });
    },
    add: (deltas) => db.transaction().execute((trx) => addTo(trx, deltas)),
  };
}
