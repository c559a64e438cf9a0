import type { Logger } from '../log.js';
import type { CounterSink } from '../metrics/sink.js';
import type { Db } from '../storage/database.js';
import type { UsageDailyTable } from '../storage/schema.js';

/** Browser requests carry no key; their usage is counted under this name. */
export const SESSION_USAGE_KEY = 'session';

export interface UsageEvent {
  userId: string;
  keyId?: string;
  status: number;
  latencyMs: number;
  promptTokens: number;
  completionTokens: number;
  /** Millionths of budgets.currency at the price in force when the request ran; 0 without a price. */
  costMicros?: number;
}

/** One row of usage_daily: a day, a user and a key (or "session"). */
export type UsageRow = UsageDailyTable;

export interface UsageCounters {
  requests: CounterSink;
  tokens: CounterSink;
}

const FLUSH_INTERVAL_MS = 2_000;
const DAY_MS = 86_400_000;

function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

const NUMERIC = [
  'requests',
  'prompt_tokens',
  'completion_tokens',
  'status_2xx',
  'status_4xx',
  'status_5xx',
  'latency_ms_total',
  'cost_micros',
] as const;

/**
 * Per key and per user per day: requests, tokens, status classes and latency. Events are summed in
 * memory and written in batches every two seconds, off the request path; rows are incremented, so
 * any number of gateway processes may write the same day.
 */
export class UsageRecorder {
  private pending = new Map<string, UsageRow>();
  /** The day of the latest event and its bounds: formatting a date on every request shows in profiles. */
  private recentDay = { name: '', start: 0, end: 0 };
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    private readonly counters?: UsageCounters,
  ) {
    this.timer = setInterval(() => void this.flush(), FLUSH_INTERVAL_MS);
    this.timer.unref();
  }

  record(event: UsageEvent, now = Date.now()): void {
    const day = this.dayOfEvent(now);
    const keyId = event.keyId ?? SESSION_USAGE_KEY;
    const id = `${day}|${event.userId}|${keyId}`;
    let row = this.pending.get(id);
    if (!row) {
      row = {
        day,
        user_id: event.userId,
        key_id: keyId,
        requests: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        status_2xx: 0,
        status_4xx: 0,
        status_5xx: 0,
        latency_ms_total: 0,
        cost_micros: 0,
      };
      this.pending.set(id, row);
    }
    const statusClass = event.status >= 500 ? 'status_5xx' : event.status >= 400 ? 'status_4xx' : 'status_2xx';
    row.requests += 1;
    row[statusClass] += 1;
    row.prompt_tokens += event.promptTokens;
    row.completion_tokens += event.completionTokens;
    row.latency_ms_total += Math.round(event.latencyMs);
    if (event.costMicros) row.cost_micros += event.costMicros;
    this.counters?.requests.inc({ status_class: statusClass.slice(7) });
    if (event.promptTokens) this.counters?.tokens.inc({ kind: 'prompt' }, event.promptTokens);
    if (event.completionTokens) this.counters?.tokens.inc({ kind: 'completion' }, event.completionTokens);
  }

  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const rows = [...this.pending.values()];
    this.pending = new Map();
    try {
      for (const row of rows) {
        await this.db
          .insertInto('usage_daily')
          .values(row)
          .onConflict((conflict) =>
            conflict
              .columns(['day', 'user_id', 'key_id'])
              .doUpdateSet((eb) =>
                Object.fromEntries(
                  NUMERIC.map((column) => [column, eb(`usage_daily.${column}`, '+', eb.ref(`excluded.${column}`))]),
                ),
              ),
          )
          .execute();
      }
    } catch (error) {
      // Kept for the next flush rather than lost: a database hiccup must not erase usage.
      for (const row of rows) this.mergeBack(row);
      this.log.warn({ err: error }, 'usage could not be written; will retry');
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  /** Days × keys of one user, newest first, for the account page and GET /v1/auth/usage. */
  private dayOfEvent(ms: number): string {
    if (ms < this.recentDay.start || ms >= this.recentDay.end) {
      const start = ms - (ms % DAY_MS);
      this.recentDay = { name: dayOf(ms), start, end: start + DAY_MS };
    }
    return this.recentDay.name;
  }

  async forUser(userId: string, days = 30, now = Date.now()): Promise<UsageRow[]> {
    const rows = await this.db
      .selectFrom('usage_daily')
      .selectAll()
      .where('user_id', '=', userId)
      .where('day', '>=', dayOf(now - (days - 1) * DAY_MS))
      .orderBy('day', 'desc')
      .execute();
    return rows.map(numeric);
  }

  /** Totals per user over the last `days`, for the admin page. */
  async totalsByUser(days = 30, now = Date.now()): Promise<Map<string, UsageRow>> {
    const rows = await this.db
      .selectFrom('usage_daily')
      .selectAll()
      .where('day', '>=', dayOf(now - (days - 1) * DAY_MS))
      .execute();
    const totals = new Map<string, UsageRow>();
    for (const row of rows.map(numeric)) {
      const total = totals.get(row.user_id);
      if (!total) totals.set(row.user_id, { ...row, day: '', key_id: '' });
      else for (const column of NUMERIC) total[column] += row[column];
    }
    return totals;
  }

  private mergeBack(row: UsageRow): void {
    const id = `${row.day}|${row.user_id}|${row.key_id}`;
    const current = this.pending.get(id);
    if (!current) this.pending.set(id, row);
    else for (const column of NUMERIC) current[column] += row[column];
  }
}

function numeric(row: UsageRow): UsageRow {
  const out = { ...row };
  for (const column of NUMERIC) out[column] = Number(row[column]);
  return out;
}
