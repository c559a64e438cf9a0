import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/index.js';
import { HttpError } from '../errors.js';
import { growingCapacity } from '../storage/capacity.js';
import type { Identity } from '../identity/identify.js';
import type { CounterSink } from '../metrics/sink.js';
import type { StreamMeter, TokenUsage } from '../usage/extract.js';
import {
  whenAnswered,
  type Amount,
  type CounterLine,
  type Ledger,
  type MaybePromise,
  type Reservation,
} from './ledger.js';
import { describeWait, PERIODS, PeriodCalendar, type Period } from './period.js';
import { costMicros, formatSpend, microsOf, PriceTable, type Price } from './prices.js';
import type { BudgetLimit, BudgetStore } from './store.js';

/** The `budgets` section of the configuration. */
export type BudgetSettings = Config['budgets'];

export type BudgetScope = 'user' | 'group' | 'key' | 'machine';

/** One limit on one measure: the user's (from the default, a group or an override) or the key's. */
export interface BudgetLine {
  scope: BudgetScope;
  /** The group whose budget this is (scope `group`). */
  group?: string;
  /** Whose counter: "user:ID", "key:ID" or "machine:service:NAME/SUBJECT". */
  subject: string;
  measure: 'tokens' | 'spend';
  /** Tokens, or millionths of the currency. */
  limit: number;
  period: Period;
}

/** What a request is charged to, as the decision hands it over. */
export interface BudgetCharge {
  lines: readonly BudgetLine[];
  /** The metrics' group label: the group whose budget the user has, or "none". */
  group: string;
}

/** One budget as GET /v1/auth/budgets and the account page show it; spend in currency units. */
export interface BudgetStatus {
  scope: BudgetScope;
  group: string | null;
  key_id: string | null;
  measure: 'tokens' | 'spend';
  period: Period;
  limit: number;
  used: number;
  remaining: number;
  unit: string;
  resets_at: string;
}

/** What the request body says about its cost, read while it arrives. */
export interface CostFacts {
  model?: string;
  maxTokens?: number;
  bodyBytes: number;
}

/** Each trusted issuer's `budget` by its name: what every machine subject of that issuer may use. */
export type MachineBudgets = ReadonlyMap<string, BudgetLimit>;

/** The `budget` of each entry of auth.trusted_issuers that has one, in the units counters use. */
export function machineBudgetsOf(issuers: Config['auth']['trusted_issuers']): MachineBudgets {
  const budgets = new Map<string, BudgetLimit>();
  for (const { name, budget } of issuers) {
    if (budget) budgets.set(name, limitOf(budget));
  }
  return budgets;
}

/** A configured budget (spend in currency units) as a limit (spend in millionths). */
function limitOf(budget: { tokens?: number; spend?: number; period: Period }): BudgetLimit {
  return {
    tokens: budget.tokens,
    micros: budget.spend === undefined ? undefined : microsOf(budget.spend),
    period: budget.period,
  };
}

export interface BudgetMetrics {
  spend: CounterSink;
  tokens: CounterSink;
  refusals: CounterSink;
}

const PERIOD_DAYS: Record<Period, number> = { day: 1, week: 7, month: 30 };
const PERIOD_WORD: Record<Period, string> = { day: 'daily', week: 'weekly', month: 'monthly' };
/** An admin's change of an override or a key budget reaches every replica within this long. */
const LOOKUP_TTL_MS = 10_000;
/** Lookups and the charges built from them are each kept half of that, so both together stay within it. */
const CACHE_TTL_MS = LOOKUP_TTL_MS / 2;
/** A cut stream asks for room this many tokens at a time: its overspend past the budget is below one step. */
export const STREAM_STEP_TOKENS = 256;
const WARN_AT = 0.8;
const CUT_ERROR = {
  message:
    'The budget ran out during this answer, so it was cut; see x-budget-remaining and retry after the budget resets.',
  type: 'rate_limit_error',
  param: null,
  code: 'budget_exceeded',
};
const PROCESS_ID = randomBytes(8).toString('hex');
const NONE = false;

/**
 * The user's budget: an administrator's override, else the most generous of their groups'
 * budgets (per measure, the highest limit per day of any group that sets that measure), else
 * `budgets.per_user`. Groups replace the default rather than add to it.
 */
export function resolveUserBudget(
  groups: readonly string[],
  settings: Pick<BudgetSettings, 'per_user' | 'groups'>,
  override?: BudgetLimit,
): { lines: Omit<BudgetLine, 'subject'>[]; group: string } {
  if (override) return { lines: linesOf('user', override), group: 'none' };
  const lines: Omit<BudgetLine, 'subject'>[] = [];
  let labelled: string | undefined;
  for (const measure of ['tokens', 'spend'] as const) {
    let best: Omit<BudgetLine, 'subject'> | undefined;
    for (const group of groups) {
      if (!Object.hasOwn(settings.groups, group)) continue;
      const budget = settings.groups[group]!;
      const limit =
        measure === 'tokens' ? budget.tokens : budget.spend === undefined ? undefined : microsOf(budget.spend);
      if (limit === undefined) continue;
      const line = { scope: 'group' as const, group, measure, limit, period: budget.period };
      if (!best || dailyRate(line) > dailyRate(best)) best = line;
    }
    if (best) {
      lines.push(best);
      labelled ??= best.group;
    }
  }
  const inAGroup = groups.some((group) => Object.hasOwn(settings.groups, group));
  if (inAGroup) return { lines, group: labelled ?? 'none' };
  const fallback = settings.per_user;
  if (!fallback) return { lines: [], group: 'none' };
  return { lines: linesOf('user', limitOf(fallback)), group: 'none' };
}

function linesOf(scope: BudgetScope, limit: BudgetLimit): Omit<BudgetLine, 'subject'>[] {
  const lines: Omit<BudgetLine, 'subject'>[] = [];
  if (limit.tokens !== undefined) lines.push({ scope, measure: 'tokens', limit: limit.tokens, period: limit.period });
  if (limit.micros !== undefined) lines.push({ scope, measure: 'spend', limit: limit.micros, period: limit.period });
  return lines;
}

function dailyRate(line: Pick<BudgetLine, 'limit' | 'period'>): number {
  return line.limit / PERIOD_DAYS[line.period];
}

/**
 * Budgets in force: who is charged what, admission with a reservation, charging as a stream goes,
 * settling at the end. Counters live in the ledger (this process, the database or Redis).
 */
export class Budgets {
  readonly prices: PriceTable;
  readonly calendar: PeriodCalendar;
  private admitted = 0;
  private readonly overrides = new LRUCache<string, BudgetLimit | false>({
    ...growingCapacity(50_000),
    ttl: CACHE_TTL_MS,
  });
  private readonly keyBudgets = new LRUCache<string, BudgetLimit | false>({
    ...growingCapacity(50_000),
    ttl: CACHE_TTL_MS,
  });
  /**
   * Each user's charge as last resolved, for as long as the lookups behind it are kept: the API-key
   * and session caches hand over the same user object on every request, so its charge and counter
   * names are built once, not per request.
   */
  private readonly charges = new WeakMap<
    Identity['user'],
    { keyId: string | undefined; charge: BudgetCharge | undefined; until: number; generation: number }
  >();
  /** The counters of a charge in the current period windows, until the first of them ends. */
  private readonly counters = new WeakMap<
    BudgetCharge,
    { from: number; until: number; limited: { lines: CounterLine[]; of: number[] }; every: CounterLine[] }
  >();
  /** Bumped by forget(): charges resolved before it are resolved again. */
  private generation = 0;

  constructor(
    readonly settings: BudgetSettings,
    private readonly ledger: Ledger,
    readonly store: BudgetStore,
    private readonly options: { now?: () => number; metrics?: BudgetMetrics; machines?: MachineBudgets } = {},
  ) {
    this.prices = new PriceTable(settings.prices, settings.currency);
    this.calendar = new PeriodCalendar(settings.time_zone);
  }

  now(): number {
    return this.options.now ? this.options.now() : Date.now();
  }

  /** The budgets a request of this identity is charged to; undefined when none applies. */
  async chargeFor(identity: Identity): Promise<BudgetCharge | undefined> {
    const now = this.now();
    const cached = this.charges.get(identity.user);
    if (cached && cached.keyId === identity.key?.id && now < cached.until && cached.generation === this.generation) {
      return cached.charge;
    }
    const generation = this.generation;
    const charge = await this.resolveCharge(identity);
    this.charges.set(identity.user, { keyId: identity.key?.id, charge, until: now + CACHE_TTL_MS, generation });
    return charge;
  }

  private async resolveCharge(identity: Identity): Promise<BudgetCharge | undefined> {
    const { user, key, service } = identity;
    // A machine is no person: per_user, groups and overrides are people's; it has its issuer's budget.
    if (service) {
      const own = this.options.machines?.get(service.name);
      if (!own) return undefined;
      return {
        lines: linesOf('machine', own).map((line) => ({ ...line, subject: `machine:${user.id}` })),
        group: 'none',
      };
    }
    let override = this.overrides.get(user.id);
    if (override === undefined) {
      override = (await this.store.override(user.id)) ?? NONE;
      this.overrides.set(user.id, override);
    }
    const resolved = resolveUserBudget(user.groups, this.settings, override || undefined);
    const lines: BudgetLine[] = resolved.lines.map((line) => ({ ...line, subject: `user:${user.id}` }));
    if (key) {
      let own = this.keyBudgets.get(key.id);
      if (own === undefined) {
        own = (await this.store.keyBudget(key.id)) ?? NONE;
        this.keyBudgets.set(key.id, own);
      }
      if (own) for (const line of linesOf('key', own)) lines.push({ ...line, subject: `key:${key.id}` });
    }
    return lines.length > 0 ? { lines, group: resolved.group } : undefined;
  }

  /** Writes counters the ledger holds back. */
  async close(): Promise<void> {
    await this.ledger.close?.();
  }

  /** Forgets cached overrides and key budgets of this process (after an admin or owner changed one). */
  forget(): void {
    this.generation++;
    this.overrides.clear();
    this.keyBudgets.clear();
  }

  /**
   * Admits a request only while each of its budgets has room, reserving its estimate: `max_tokens`
   * (else the configured default) plus a quarter token per body byte for the prompt. Throws 429
   * `budget_exceeded` naming the budget and when it resets (rejects, when the ledger answered later).
   * Answers at once when the ledger does.
   */
  admit(charge: BudgetCharge, facts: CostFacts): MaybePromise<Admission> {
    const now = this.now();
    const price = this.prices.of(facts.model);
    const prompt = Math.ceil(facts.bodyBytes / 4);
    const completion =
      facts.maxTokens ??
      (facts.model !== undefined && Object.hasOwn(this.settings.reserve_tokens_per_model, facts.model)
        ? this.settings.reserve_tokens_per_model[facts.model]!
        : this.settings.reserve_tokens);
    const estimate = { tokens: prompt + completion, micros: costMicros(price, prompt, completion) };
    const { limited: counters, every } = this.windowCountersOf(charge, now);
    // Unique across replicas without a random draw per request.
    const id = `${PROCESS_ID}${++this.admitted}`;
    const expiresAt = now + this.settings.reservation_seconds * 1000;
    const admitted = ({ refused, totals }: Reservation): Admission => {
      if (refused !== undefined) {
        const line = charge.lines.find((candidate, index) => {
          const total = totals[counters.of[index]!]!;
          return (candidate.measure === 'tokens' ? total.tokens : total.micros) >= candidate.limit;
        });
        throw this.exceeded(line ?? charge.lines[0]!, now);
      }
      return new Admission(this, this.ledger, charge, counters.lines, id, price, estimate, prompt, {
        settled: every,
        headers: this.headersFor(charge.lines, counters.of, totals, estimate),
        expiresAt,
        metrics: this.options.metrics,
      });
    };
    return whenAnswered(this.ledger.reserve(counters.lines, id, estimate, expiresAt, now), admitted);
  }

  /** The charge's counters in the windows `now` is in, built again only when one of them ends. */
  private windowCountersOf(charge: BudgetCharge, now: number) {
    let counters = this.counters.get(charge);
    if (!counters || now < counters.from || now >= counters.until) {
      const limited = this.countersOf(charge.lines, now);
      const every = this.everyWindowOf(charge.lines, limited.lines, now);
      const windows = PERIODS.map((period) => this.calendar.windowOf(period, now));
      counters = {
        from: Math.max(...windows.map((window) => window.start)),
        until: Math.min(...windows.map((window) => window.end)),
        limited,
        every,
      };
      this.counters.set(charge, counters);
    }
    return counters;
  }

  /** The counters of `lines` this period (one per subject and window) and which counter each line uses. */
  countersOf(lines: readonly BudgetLine[], now: number): { lines: CounterLine[]; of: number[] } {
    const counters: CounterLine[] = [];
    const of = lines.map((line) => {
      const window = this.calendar.windowOf(line.period, now);
      const id = `${line.subject}|${window.id}`;
      let index = counters.findIndex((counter) => counter.id === id);
      if (index < 0) index = counters.push({ id, endsAt: window.end }) - 1;
      const counter = counters[index]!;
      if (line.measure === 'tokens') counter.tokens = Math.min(counter.tokens ?? Infinity, line.limit);
      else counter.micros = Math.min(counter.micros ?? Infinity, line.limit);
      return index;
    });
    return { lines: counters, of };
  }

  /**
   * The counters a request's use is added to: every period window (day, week, month) of each
   * subject, not only the limited ones, so that a budget whose period changes (an override, a
   * group's new setting) starts from what was really used in its new window.
   */
  private everyWindowOf(lines: readonly BudgetLine[], limited: readonly CounterLine[], now: number): CounterLine[] {
    const counters = [...limited];
    for (const subject of new Set(lines.map((line) => line.subject))) {
      for (const period of PERIODS) {
        const window = this.calendar.windowOf(period, now);
        const id = `${subject}|${window.id}`;
        if (!counters.some((counter) => counter.id === id)) counters.push({ id, endsAt: window.end });
      }
    }
    return counters;
  }

  /** Used so far this period on each line, for the account page. */
  async usedOn(lines: readonly BudgetLine[]): Promise<Array<{ line: BudgetLine; used: number; resetsAt: number }>> {
    const now = this.now();
    const counters = this.countersOf(lines, now);
    const used = await this.ledger.read(counters.lines.map((counter) => counter.id));
    return lines.map((line, index) => {
      const total = used[counters.of[index]!]!;
      return {
        line,
        used: line.measure === 'tokens' ? total.tokens : total.micros,
        resetsAt: counters.lines[counters.of[index]!]!.endsAt,
      };
    });
  }

  /** Each budget of this identity with what is used and left this period, for the account page and API. */
  async statusOf(identity: Identity): Promise<BudgetStatus[]> {
    const charge = await this.chargeFor(identity);
    if (!charge) return [];
    const used = await this.usedOn(charge.lines);
    return used.map(({ line, used: spent, resetsAt }) => ({
      scope: line.scope,
      group: line.group ?? null,
      key_id: line.scope === 'key' ? line.subject.slice(4) : null,
      measure: line.measure,
      period: line.period,
      limit: line.measure === 'tokens' ? line.limit : line.limit / 1_000_000,
      used: line.measure === 'tokens' ? spent : spent / 1_000_000,
      remaining: Math.max(0, line.measure === 'tokens' ? line.limit - spent : (line.limit - spent) / 1_000_000),
      unit: line.measure === 'tokens' ? 'tokens' : this.settings.currency,
      resets_at: new Date(resetsAt).toISOString(),
    }));
  }

  /** "1200 tokens", "4.20 USD". */
  describe(measure: BudgetLine['measure'], amount: number): string {
    return measure === 'tokens'
      ? `${Math.max(0, amount)} tokens`
      : formatSpend(Math.max(0, amount), this.settings.currency);
  }

  private exceeded(line: BudgetLine, now: number): HttpError {
    const resetsAt = this.calendar.windowOf(line.period, now).end;
    const whose =
      line.scope === 'key'
        ? "This API key's"
        : line.scope === 'group'
          ? `Your group "${line.group}"'s`
          : line.scope === 'machine'
            ? `${line.subject.slice('machine:'.length)}'s`
            : 'Your';
    const seconds = Math.max(1, Math.ceil((resetsAt - now) / 1000));
    this.options.metrics?.refusals.inc({ scope: line.scope });
    return new HttpError(
      429,
      'budget_exceeded',
      `${whose} ${PERIOD_WORD[line.period]} budget of ${this.describe(line.measure, line.limit)} (${line.scope} budget) is used up; ` +
        `it resets at ${new Date(resetsAt).toISOString()} (${describeWait(resetsAt - now)}).`,
      { headers: { 'retry-after': String(seconds) } },
    );
  }

  /**
   * `x-budget-remaining` for the line with the least room left, and `x-warning` past 80 %, as they
   * stood before this request's `reserved` estimate.
   */
  private headersFor(
    lines: readonly BudgetLine[],
    of: readonly number[],
    totals: readonly Amount[],
    reserved: Amount,
  ): Record<string, string> {
    let line: BudgetLine | undefined;
    let used = 0;
    for (let index = 0; index < lines.length; index++) {
      const candidate = lines[index]!;
      const total = totals[of[index]!]!;
      const before = candidate.measure === 'tokens' ? total.tokens - reserved.tokens : total.micros - reserved.micros;
      if (!line || before / candidate.limit > used / line.limit) {
        line = candidate;
        used = before;
      }
    }
    if (!line) return {};
    const headers: Record<string, string> = { 'x-budget-remaining': this.describe(line.measure, line.limit - used) };
    if (used / line.limit >= WARN_AT) {
      headers['x-warning'] =
        `${Math.floor((100 * used) / line.limit)}% of the ${PERIOD_WORD[line.period]} ${line.scope} budget ` +
        `(${this.describe(line.measure, line.limit)}) is used.`;
    }
    return headers;
  }
}

/** The reservation of one admitted request, charged as its stream goes and settled when it ends. */
export class Admission implements StreamMeter {
  readonly headers: Record<string, string>;
  /** Tokens counted so far: the prompt's estimate plus the answer as it streams. */
  private streamed: number;
  private held: Amount;
  private settled = false;
  /** Every window's counter of the request's subjects: what it used is added to each. */
  private readonly settledOn: CounterLine[];
  private readonly expiresAt: number;
  private readonly metrics?: BudgetMetrics;

  constructor(
    private readonly budgets: Budgets,
    private readonly ledger: Ledger,
    private readonly charge: BudgetCharge,
    private readonly counters: CounterLine[],
    private readonly id: string,
    /** The price in force at admission: the request is charged at it whatever changes meanwhile. */
    readonly price: Price | undefined,
    estimate: Amount,
    private readonly promptEstimate: number,
    extra: { settled: CounterLine[]; headers: Record<string, string>; expiresAt: number; metrics?: BudgetMetrics },
  ) {
    this.settledOn = extra.settled;
    this.headers = extra.headers;
    this.held = estimate;
    this.streamed = promptEstimate;
    this.expiresAt = extra.expiresAt;
    this.metrics = extra.metrics;
  }

  /**
   * Counts `tokens` more of a streamed answer. True while within what is reserved, or when
   * budgets.cut_streams is off; past it, asks the ledger for another step, and resolves false when
   * a budget has no room left: the stream is then cut with `finalEvent`.
   */
  count(tokens: number): boolean | Promise<boolean> {
    this.streamed += tokens;
    if (!this.budgets.settings.cut_streams || this.streamed <= this.held.tokens) return true;
    const step = { tokens: STREAM_STEP_TOKENS, micros: costMicros(this.price, 0, STREAM_STEP_TOKENS) };
    const now = this.budgets.now();
    const stepped = ({ refused }: Reservation): boolean => {
      if (refused !== undefined) return false;
      this.held = { tokens: this.held.tokens + step.tokens, micros: this.held.micros + step.micros };
      return true;
    };
    return whenAnswered(this.ledger.reserve(this.counters, this.id, step, Math.max(this.expiresAt, now), now), stepped);
  }

  /** The final SSE event of a cut stream, OpenAI-shaped. */
  finalEvent(): string {
    return `data: ${JSON.stringify({ error: CUT_ERROR })}\n\n`;
  }

  /**
   * Charges what was used (the platform's report, else what was counted of the answer: the
   * prompt's estimate and the streamed text; nothing for a refused or failed request) and releases
   * the reservation. Returns the cost in millionths of the currency, for the usage row.
   */
  settle(reported: TokenUsage | undefined, failed: boolean): number {
    if (this.settled) return 0;
    this.settled = true;
    const prompt = failed ? 0 : reported ? reported.prompt_tokens : this.promptEstimate;
    const completion = failed ? 0 : reported ? reported.completion_tokens : this.streamed - this.promptEstimate;
    const micros = costMicros(this.price, prompt, completion);
    const used = { tokens: prompt + completion, micros };
    const settling = this.ledger.settle(this.settledOn, this.id, used);
    // A settlement that fails does not fail the answer: its reservation lapses at its expiry.
    if (settling instanceof Promise) settling.catch(() => undefined);
    if (this.metrics) {
      this.metrics.tokens.inc({ group: this.charge.group }, used.tokens);
      if (micros) this.metrics.spend.inc({ group: this.charge.group }, micros / 1_000_000);
    }
    return micros;
  }
}
