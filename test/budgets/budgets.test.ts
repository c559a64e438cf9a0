/**
 * Budgets without a gateway: period windows in a time zone, a budget resetting at its boundary
 * under a controllable clock, which budget a user gets from their groups, a key's budget capped
 * by its owner's, a machine's budget from its issuer, and a price change applying to later
 * requests only.
 */
import { describe, expect, it } from 'vitest';
import { Budgets, machineBudgetsOf, resolveUserBudget, type BudgetSettings } from '../../src/budgets/budgets.js';
import { parseKeyBudget } from '../../src/budgets/key-budget.js';
import { memoryLedger } from '../../src/budgets/ledger.js';
import { PeriodCalendar } from '../../src/budgets/period.js';
import { budgetsEnabled } from '../../src/budgets/setup.js';
import type { BudgetStore } from '../../src/budgets/store.js';
import type { Identity } from '../../src/identity/identify.js';
import type { User } from '../../src/users/store.js';
import { loadConfigFromObject } from '../../src/config/index.js';
import { HttpError } from '../../src/errors.js';
import { MINIMAL } from '../config/fixtures.js';

const SETTINGS: BudgetSettings = {
  currency: 'USD',
  prices: {},
  time_zone: 'UTC',
  groups: {},
  cut_streams: false,
  reserve_tokens: 100,
  reserve_tokens_per_model: {},
  reservation_seconds: 900,
};

/** A store with nothing set at run time: budgets come from the settings alone. */
const EMPTY_STORE = { override: async () => undefined, keyBudget: async () => undefined } as unknown as BudgetStore;

function identityOf(groups: string[] = []): Identity {
  return { user: { id: 'u1', groups } as unknown as User, method: 'session' };
}

describe('period windows', () => {
  it('start at midnight in the configured time zone, weeks on Monday, across a summer-time change', () => {
    const paris = new PeriodCalendar('Europe/Paris');
    // 2026-03-29 is the Sunday clocks go forward in Paris (02:00 -> 03:00).
    const now = Date.parse('2026-03-29T12:00:00Z');
    expect(paris.windowOf('day', now)).toEqual({
      id: '2026-03-29',
      start: Date.parse('2026-03-28T23:00:00Z'),
      end: Date.parse('2026-03-29T22:00:00Z'),
    });
    expect(paris.windowOf('week', now)).toEqual({
      id: 'w2026-03-23',
      start: Date.parse('2026-03-22T23:00:00Z'),
      end: Date.parse('2026-03-29T22:00:00Z'),
    });
    expect(paris.windowOf('month', now)).toEqual({
      id: '2026-03',
      start: Date.parse('2026-02-28T23:00:00Z'),
      end: Date.parse('2026-03-31T22:00:00Z'),
    });
    // Half past midnight in Paris on 1 April is still 31 March in UTC.
    const utc = new PeriodCalendar('UTC');
    const april = Date.parse('2026-03-31T22:30:00Z');
    expect(paris.windowOf('month', april).id).toBe('2026-04');
    expect(utc.windowOf('month', april).id).toBe('2026-03');
    expect(utc.windowOf('month', Date.parse('2026-12-31T23:59:59Z')).end).toBe(Date.parse('2027-01-01T00:00:00Z'));
  });

  it('resets a used-up budget at the period boundary, as a controllable clock crosses it', async () => {
    let now = Date.parse('2026-12-31T22:00:00Z');
    const budgets = new Budgets(
      { ...SETTINGS, per_user: { tokens: 100, period: 'month' } },
      memoryLedger(),
      EMPTY_STORE,
      {
        now: () => now,
      },
    );
    const charge = (await budgets.chargeFor(identityOf()))!;
    const admission = await budgets.admit(charge, { maxTokens: 10, bodyBytes: 0 });
    admission.settle({ prompt_tokens: 50, completion_tokens: 60 }, false);
    await new Promise((resolve) => setImmediate(resolve));
    // The in-memory ledger answers at once, so the refusal is thrown, not a rejection.
    const refusal = (() => {
      try {
        return budgets.admit(charge, { maxTokens: 10, bodyBytes: 0 });
      } catch (error) {
        return error;
      }
    })();
    expect(refusal).toBeInstanceOf(HttpError);
    expect((refusal as HttpError).code).toBe('budget_exceeded');
    expect((refusal as HttpError).message).toContain('resets at 2027-01-01T00:00:00.000Z (in 2 hours)');
    expect((refusal as HttpError).headers['retry-after']).toBe('7200');
    now = Date.parse('2027-01-01T00:00:00Z');
    const fresh = await budgets.admit(charge, { maxTokens: 10, bodyBytes: 0 });
    expect(fresh.headers['x-budget-remaining']).toBe('100 tokens');
  });
});

describe('which budget a user gets', () => {
  const settings = {
    per_user: { tokens: 1_000, period: 'month' as const },
    groups: {
      'llm-interns': { tokens: 2_000_000, period: 'month' as const },
      research: { spend: 500, period: 'month' as const },
      daily: { tokens: 100_000, period: 'day' as const },
    },
  };

  it('gives someone in no budgeted group the per-user default', () => {
    expect(resolveUserBudget(['staff'], settings)).toEqual({
      lines: [{ scope: 'user', measure: 'tokens', limit: 1_000, period: 'month' }],
      group: 'none',
    });
  });

  it('takes per measure the most generous group by limit per day, and drops the default', () => {
    expect(resolveUserBudget(['llm-interns', 'research', 'daily'], settings)).toEqual({
      lines: [
        // 100000 a day beats 2000000 a month (66667 a day).
        { scope: 'group', group: 'daily', measure: 'tokens', limit: 100_000, period: 'day' },
        { scope: 'group', group: 'research', measure: 'spend', limit: 500_000_000, period: 'month' },
      ],
      group: 'daily',
    });
  });

  it("lets an administrator's override replace every configured budget", () => {
    expect(resolveUserBudget(['llm-interns'], settings, { micros: 5_000_000, period: 'week' })).toEqual({
      lines: [{ scope: 'user', measure: 'spend', limit: 5_000_000, period: 'week' }],
      group: 'none',
    });
  });

  it('ignores a group named like an Object.prototype member', () => {
    expect(resolveUserBudget(['constructor', '__proto__'], settings).lines[0]?.scope).toBe('user');
  });
});

describe("a machine's budget (auth.trusted_issuers[].budget)", () => {
  const issuer = {
    name: 'ci',
    issuer: 'https://token.actions.githubusercontent.com',
    discovery: true,
    audience: 'https://llm.example.com',
    scopes: ['inference'],
  };
  const problemsWith = (budget: unknown): string => {
    try {
      loadConfigFromObject({ ...MINIMAL, auth: { trusted_issuers: [{ ...issuer, budget }] } }, 'test');
      return '';
    } catch (error) {
      return (error as Error).message;
    }
  };

  it('accepts tokens and/or spend over a period, a month by default, and turns budgets on', () => {
    const config = loadConfigFromObject(
      { ...MINIMAL, auth: { trusted_issuers: [{ ...issuer, budget: { spend: 5 } }] } },
      'test',
    );
    expect(budgetsEnabled(config)).toBe(true);
    expect(machineBudgetsOf(config.auth.trusted_issuers)).toEqual(
      new Map([['ci', { tokens: undefined, micros: 5_000_000, period: 'month' }]]),
    );
  });

  it('names the issuer entry and what a budget needs when it is wrong', () => {
    const expected =
      'must be a mapping with tokens and/or spend, and period (day, week or month), given to each subject';
    expect(problemsWith({ period: 'day' })).toContain(`auth.trusted_issuers[0].budget ${expected}`);
    expect(problemsWith({ tokens: 0, period: 'day' })).toContain(`auth.trusted_issuers[0].budget ${expected}`);
    expect(problemsWith({ tokens: 100, period: 'year' })).toContain(`auth.trusted_issuers[0].budget ${expected}`);
  });

  it("charges a machine only its issuer's budget, per subject; people's budgets are not a machine's", async () => {
    const machines = new Map([['ci', { tokens: 50, period: 'day' as const }]]);
    const budgets = new Budgets({ ...SETTINGS, per_user: { tokens: 1, period: 'day' } }, memoryLedger(), EMPTY_STORE, {
      machines,
    });
    const machine = (name: string, subject: string): Identity => ({
      user: { id: `service:${name}/${subject}`, groups: [] } as unknown as User,
      method: 'jwt_bearer',
      service: { name, issuer: 'https://issuer.example.com', subject },
    });
    expect(await budgets.chargeFor(machine('ci', 'job'))).toEqual({
      lines: [{ scope: 'machine', subject: 'machine:service:ci/job', measure: 'tokens', limit: 50, period: 'day' }],
      group: 'none',
    });
    expect(await budgets.chargeFor(machine('k8s', 'job')), 'an issuer without a budget').toBeUndefined();
  });
});

describe("a key's budget", () => {
  const owner = {
    lines: [
      {
        scope: 'group' as const,
        group: 'interns',
        subject: 'user:u1',
        measure: 'tokens' as const,
        limit: 3_000_000,
        period: 'month' as const,
      },
    ],
    group: 'interns',
  };

  it("is capped by its owner's, per day when the periods differ", () => {
    expect(parseKeyBudget({ tokens: 100_000, period: 'day' }, owner, 'USD')).toEqual({
      tokens: 100_000,
      period: 'day',
    });
    expect(() => parseKeyBudget({ tokens: 100_001, period: 'day' }, owner, 'USD')).toThrow(
      "A key's budget cannot exceed its owner's: yours is 3000000 tokens per month",
    );
    expect(() => parseKeyBudget({ tokens: 3_000_001 }, owner, 'USD')).toThrow(/cannot exceed/);
  });

  it('may limit a measure its owner does not, and any amount when the owner has no budget', () => {
    expect(parseKeyBudget({ spend: 2.5, period: 'week' }, owner, 'USD')).toEqual({ micros: 2_500_000, period: 'week' });
    expect(parseKeyBudget({ tokens: 10 ** 12 }, undefined, 'USD')).toEqual({ tokens: 10 ** 12, period: 'month' });
  });
});

describe('prices', () => {
  it('charges a request at the price in force when it was admitted; a change applies to later requests', async () => {
    const budgets = new Budgets(
      { ...SETTINGS, prices: { m: { input: 1, output: 2 } }, per_user: { spend: 100, period: 'month' } },
      memoryLedger(),
      EMPTY_STORE,
    );
    const charge = (await budgets.chargeFor(identityOf()))!;
    const before = await budgets.admit(charge, { model: 'm', maxTokens: 10, bodyBytes: 0 });
    budgets.prices.replace({ m: { input: 10, output: 20 } });
    const after = await budgets.admit(charge, { model: 'm', maxTokens: 10, bodyBytes: 0 });
    const usage = { prompt_tokens: 1_000, completion_tokens: 1_000 };
    // Settled in the other order: what counts is when each was admitted.
    expect(after.settle(usage, false)).toBe(30_000);
    expect(before.settle(usage, false)).toBe(3_000);
    const unpriced = await budgets.admit(charge, { model: 'other', maxTokens: 10, bodyBytes: 0 });
    expect(unpriced.settle(usage, false)).toBe(0);
  });
});
