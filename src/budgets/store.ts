import type { Db } from '../storage/database.js';
import type { Period } from './period.js';

/** A budget as stored and configured: tokens and/or millionths of budgets.currency over a period. */
export interface BudgetLimit {
  tokens?: number;
  micros?: number;
  period: Period;
}

function limitOf(row: { tokens: number | null; spend_micros: number | null; period: string }): BudgetLimit {
  return {
    ...(row.tokens === null ? {} : { tokens: Number(row.tokens) }),
    ...(row.spend_micros === null ? {} : { micros: Number(row.spend_micros) }),
    period: row.period as Period,
  };
}

/**
 * An override's change as audit detail: the new tokens, spend (in `currency`) and period, and the
 * previous ones, null where not set (both null: cleared, or none before).
 */
export function overrideChange(
  previous: BudgetLimit | undefined,
  next: BudgetLimit | undefined,
  currency: string,
): Record<string, number | string | null> {
  const spendOf = (limit: BudgetLimit | undefined) => (limit?.micros === undefined ? null : limit.micros / 1_000_000);
  return {
    tokens: next?.tokens ?? null,
    spend: spendOf(next),
    period: next?.period ?? null,
    previous_tokens: previous?.tokens ?? null,
    previous_spend: spendOf(previous),
    previous_period: previous?.period ?? null,
    currency,
  };
}

/** Owns budget_overrides and key_budgets: the budgets set at run time rather than in the configuration. */
export class BudgetStore {
  constructor(private readonly db: Db) {}

  async override(userId: string): Promise<BudgetLimit | undefined> {
    const row = await this.db
      .selectFrom('budget_overrides')
      .selectAll()
      .where('user_id', '=', userId)
      .executeTakeFirst();
    return row && limitOf(row);
  }

  /** Sets or (with no limit) clears a user's override; returns the one it replaced, for the audit log. */
  async setOverride(
    userId: string,
    limit: BudgetLimit | undefined,
    setBy: string,
    now = Date.now(),
  ): Promise<BudgetLimit | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const previous = await trx
        .selectFrom('budget_overrides')
        .selectAll()
        .where('user_id', '=', userId)
        .executeTakeFirst();
      if (!limit) {
        await trx.deleteFrom('budget_overrides').where('user_id', '=', userId).execute();
      } else {
        const row = {
          user_id: userId,
          tokens: limit.tokens ?? null,
          spend_micros: limit.micros ?? null,
          period: limit.period,
          set_by: setBy,
          set_at: now,
        };
        await trx
          .insertInto('budget_overrides')
          .values(row)
          .onConflict((conflict) => conflict.column('user_id').doUpdateSet(row))
          .execute();
      }
      return previous && limitOf(previous);
    });
  }

  async keyBudget(keyId: string): Promise<BudgetLimit | undefined> {
    const row = await this.db.selectFrom('key_budgets').selectAll().where('key_id', '=', keyId).executeTakeFirst();
    return row && limitOf(row);
  }

  async setKeyBudget(keyId: string, userId: string, limit: BudgetLimit): Promise<void> {
    await this.db
      .insertInto('key_budgets')
      .values({
        key_id: keyId,
        user_id: userId,
        tokens: limit.tokens ?? null,
        spend_micros: limit.micros ?? null,
        period: limit.period,
      })
      .execute();
  }

  /** A rotated key keeps its budget: the replacement gets the same. */
  async copyKeyBudget(fromKeyId: string, toKeyId: string): Promise<void> {
    const row = await this.db.selectFrom('key_budgets').selectAll().where('key_id', '=', fromKeyId).executeTakeFirst();
    if (row)
      await this.db
        .insertInto('key_budgets')
        .values({ ...row, key_id: toKeyId })
        .execute();
  }

  /** The user's keys that have budgets, for the account page. */
  async keyBudgetsOf(userId: string): Promise<Map<string, BudgetLimit>> {
    const rows = await this.db.selectFrom('key_budgets').selectAll().where('user_id', '=', userId).execute();
    return new Map(rows.map((row) => [row.key_id, limitOf(row)]));
  }

  async overrides(): Promise<Map<string, BudgetLimit>> {
    const rows = await this.db.selectFrom('budget_overrides').selectAll().execute();
    return new Map(rows.map((row) => [row.user_id, limitOf(row)]));
  }
}
