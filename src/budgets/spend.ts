import type { Db } from '../storage/database.js';
import type { UsageRecorder } from '../usage/recorder.js';

export interface UserSpend {
  user_id: string;
  email: string | null;
  groups: string[];
  requests: number;
  tokens: number;
  /** Millionths of budgets.currency. */
  cost_micros: number;
}

export interface GroupSpend {
  group: string;
  users: number;
  requests: number;
  tokens: number;
  cost_micros: number;
}

export interface SpendReport {
  days: number;
  users: UserSpend[];
  groups: GroupSpend[];
}

/**
 * Who spent what over the last `days`, most first (spend, then tokens), and the same per group of
 * the users' last sign-in: a user in several groups counts in each.
 */
export async function spendReport(db: Db, usage: UsageRecorder, days = 30): Promise<SpendReport> {
  const totals = await usage.totalsByUser(days);
  const ids = [...totals.keys()];
  // Read only: the users table belongs to users/store.ts.
  const people = ids.length
    ? await db.selectFrom('users').select(['id', 'email', 'groups']).where('id', 'in', ids).execute()
    : [];
  const byId = new Map(people.map((person) => [person.id, person]));
  const users = ids.map((id): UserSpend => {
    const row = totals.get(id)!;
    const person = byId.get(id);
    return {
      user_id: id,
      email: person?.email ?? null,
      groups: groupsOf(person?.groups),
      requests: row.requests,
      tokens: row.prompt_tokens + row.completion_tokens,
      cost_micros: row.cost_micros,
    };
  });
  users.sort((a, b) => b.cost_micros - a.cost_micros || b.tokens - a.tokens);
  const groups = new Map<string, GroupSpend>();
  for (const user of users) {
    for (const group of user.groups) {
      const total = groups.get(group) ?? { group, users: 0, requests: 0, tokens: 0, cost_micros: 0 };
      total.users += 1;
      total.requests += user.requests;
      total.tokens += user.tokens;
      total.cost_micros += user.cost_micros;
      groups.set(group, total);
    }
  }
  const byGroup = [...groups.values()].sort((a, b) => b.cost_micros - a.cost_micros || b.tokens - a.tokens);
  return { days, users, groups: byGroup };
}

function groupsOf(json: string | undefined): string[] {
  try {
    const parsed = JSON.parse(json ?? '[]') as unknown;
    return Array.isArray(parsed) ? parsed.filter((group): group is string => typeof group === 'string') : [];
  } catch {
    return [];
  }
}

/**
 * One CSV row (RFC 4180). A cell a spreadsheet would read as a formula (starting with =, +, -, @,
 * or a tab or carriage return) is prefixed with ', as OWASP advises against CSV injection: user
 * emails and group names come from the identity provider, not from the operator.
 */
export function csvRow(cells: ReadonlyArray<string | number | null>): string {
  return (
    cells
      .map((cell) => {
        let text = cell === null ? '' : String(cell);
        if (typeof cell === 'string' && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
        return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
      })
      .join(',') + '\r\n'
  );
}

/** The users' or the groups' part of the report as CSV, spend in currency units. */
export function spendCsv(report: SpendReport, of: 'users' | 'groups', currency: string): string {
  const spend = (micros: number) => (micros / 1_000_000).toFixed(6);
  if (of === 'users') {
    return (
      csvRow(['user_id', 'email', 'groups', 'requests', 'tokens', `spend_${currency}`]) +
      report.users
        .map((user) =>
          csvRow([
            user.user_id,
            user.email,
            user.groups.join(' '),
            user.requests,
            user.tokens,
            spend(user.cost_micros),
          ]),
        )
        .join('')
    );
  }
  return (
    csvRow(['group', 'users', 'requests', 'tokens', `spend_${currency}`]) +
    report.groups
      .map((group) => csvRow([group.group, group.users, group.requests, group.tokens, spend(group.cost_micros)]))
      .join('')
  );
}
