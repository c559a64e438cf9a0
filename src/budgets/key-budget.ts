import { HttpError } from '../errors.js';
import type { BudgetCharge, BudgetLine } from './budgets.js';
import { PERIODS, type Period } from './period.js';
import { formatSpend, microsOf } from './prices.js';
import type { BudgetLimit } from './store.js';

/** A key's budget as the API and the account form take it. */
export interface KeyBudgetInput {
  tokens?: unknown;
  spend?: unknown;
  period?: unknown;
}

const PERIOD_DAYS: Record<Period, number> = { day: 1, week: 7, month: 30 };

/** JSON schema of `budget` in POST /v1/auth/api-keys. */
export const KEY_BUDGET_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    tokens: { type: 'integer', minimum: 1 },
    spend: { type: 'number', exclusiveMinimum: 0 },
    period: { type: 'string', enum: [...PERIODS] },
  },
} as const;

/**
 * Validates a key's budget and caps it by its owner's: for each measure the owner's budget limits,
 * the key may have no more per day than the owner (a key cannot be a way around its owner's
 * budget; the owner's counter is charged too, so it could not spend more anyway).
 */
export function parseKeyBudget(
  input: KeyBudgetInput,
  owner: BudgetCharge | undefined,
  currency: string,
): BudgetLimit | undefined {
  const { tokens, spend } = input;
  const period = input.period ?? 'month';
  if (tokens === undefined && spend === undefined) return undefined;
  if (tokens !== undefined && (typeof tokens !== 'number' || !Number.isInteger(tokens) || tokens < 1)) {
    throw new HttpError(400, 'invalid_budget', 'budget.tokens must be a whole number of at least 1.');
  }
  if (spend !== undefined && (typeof spend !== 'number' || !Number.isFinite(spend) || spend <= 0)) {
    throw new HttpError(400, 'invalid_budget', `budget.spend must be a positive amount of ${currency}.`);
  }
  if (typeof period !== 'string' || !(PERIODS as readonly string[]).includes(period)) {
    throw new HttpError(400, 'invalid_budget', `budget.period must be one of ${PERIODS.join(', ')}.`);
  }
  const limit: BudgetLimit = {
    ...(tokens === undefined ? {} : { tokens: tokens as number }),
    ...(spend === undefined ? {} : { micros: microsOf(spend as number) }),
    period: period as Period,
  };
  for (const line of owner?.lines ?? []) assertWithin(line, limit, currency);
  return limit;
}

function assertWithin(owner: BudgetLine, key: BudgetLimit, currency: string): void {
  const asked = owner.measure === 'tokens' ? key.tokens : key.micros;
  if (asked === undefined) return;
  if (asked / PERIOD_DAYS[key.period] <= owner.limit / PERIOD_DAYS[owner.period]) return;
  const own = owner.measure === 'tokens' ? `${owner.limit} tokens` : formatSpend(owner.limit, currency);
  throw new HttpError(
    400,
    'budget_too_high',
    `A key's budget cannot exceed its owner's: yours is ${own} per ${owner.period}, so ask for at most that per ${owner.period}.`,
  );
}
