/** The calendar periods a budget runs over; each resets at its boundary in the configured time zone. */
export type Period = 'day' | 'week' | 'month';

export const PERIODS: readonly Period[] = ['day', 'week', 'month'];

/** One run of a period: `[start, end)` in ms since the epoch, and a name that counters are filed under. */
export interface PeriodWindow {
  /** `2026-12-02` for a day, `w2026-11-30` (its Monday) for a week, `2026-12` for a month. */
  id: string;
  start: number;
  end: number;
}

const DAY_MS = 86_400_000;

/**
 * Computes period windows in one time zone. Formatting a date in a time zone costs microseconds,
 * so the latest window of each period is kept and reused until the clock leaves it.
 */
export class PeriodCalendar {
  private readonly format: Intl.DateTimeFormat;
  private readonly recent = new Map<Period, PeriodWindow>();

  constructor(readonly timeZone: string) {
    this.format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  }

  windowOf(period: Period, now: number): PeriodWindow {
    const cached = this.recent.get(period);
    if (cached && now >= cached.start && now < cached.end) return cached;
    const window = this.compute(period, now);
    this.recent.set(period, window);
    return window;
  }

  private compute(period: Period, now: number): PeriodWindow {
    const { year, month, day } = this.wallClock(now);
    if (period === 'month') {
      const start = this.midnight(year, month, 1);
      const end = month === 12 ? this.midnight(year + 1, 1, 1) : this.midnight(year, month + 1, 1);
      return { id: `${year}-${pad(month)}`, start, end };
    }
    // ISO weeks start on Monday; Date.UTC handles day underflow into the previous month.
    const back = period === 'week' ? (new Date(Date.UTC(year, month - 1, day)).getUTCDay() + 6) % 7 : 0;
    const first = new Date(Date.UTC(year, month - 1, day - back));
    const [y, m, d] = [first.getUTCFullYear(), first.getUTCMonth() + 1, first.getUTCDate()];
    const start = this.midnight(y, m, d);
    const end = this.midnight(y, m, d + (period === 'week' ? 7 : 1));
    const name = `${y}-${pad(m)}-${pad(d)}`;
    return { id: period === 'week' ? `w${name}` : name, start, end };
  }

  /** The date and time on a wall clock in the time zone. */
  private wallClock(ms: number) {
    const parts: Record<string, number> = {};
    for (const part of this.format.formatToParts(ms)) {
      if (part.type !== 'literal') parts[part.type] = Number(part.value);
    }
    return {
      year: parts.year!,
      month: parts.month!,
      day: parts.day!,
      hour: parts.hour!,
      minute: parts.minute!,
      second: parts.second!,
    };
  }

  /** How far the time zone's wall clock is ahead of UTC at `ms`. */
  private offset(ms: number): number {
    const w = this.wallClock(ms);
    const asUtc = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);
    return asUtc - Math.floor(ms / 1000) * 1000;
  }

  /**
   * The instant the wall clock reads 00:00 on that date (day may overflow the month). The offset
   * is read twice because it may change between UTC midnight and local midnight (summer time).
   */
  private midnight(year: number, month: number, day: number): number {
    const wall = Date.UTC(year, month - 1, day);
    const guess = wall - this.offset(wall);
    return wall - this.offset(guess);
  }
}

function pad(value: number): string {
  return String(value).padStart(2, '0');
}

/** "in 3 days", "in 5 hours": when a budget resets, for messages. */
export function describeWait(ms: number): string {
  if (ms >= 2 * DAY_MS) return `in ${Math.round(ms / DAY_MS)} days`;
  if (ms >= 2 * 3_600_000) return `in ${Math.round(ms / 3_600_000)} hours`;
  return `in ${Math.max(1, Math.round(ms / 60_000))} minutes`;
}
