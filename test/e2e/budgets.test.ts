/**
 * Budgets through the real gateway in front of the sample platform: refusal with 429
 * budget_exceeded once a budget is used up, the remaining and warning headers, group budgets from
 * the provider's claims, a key's budget capped by its owner's, cost recorded in usage, twenty
 * concurrent streams against one budget, and a stream cut when its budget runs out.
 *
 * The sample platform answers "You said: <content>" one word per event and reports a token per
 * word, so each request's cost is known in advance.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/log.js';
import type { BudgetStatus } from '../../src/budgets/budgets.js';
import type { UsageRow } from '../../src/usage/recorder.js';
import { expectApiError } from '../support/api-error.js';
import { Browserless } from '../support/browserless.js';
import { createKey } from '../support/keys.js';
import { signInForSession } from '../support/sign-in.js';
import { hasTcp, requireResource } from '../support/requirements.js';
import { deleteRedisKeys, REDIS_URL } from '../support/services.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';

const redisAvailable = await requireResource('redis', hasTcp(6379), 'apt-get install redis-server');

let stack: FaultyStack | undefined;
afterEach(async () => {
  await stack?.close();
  stack = undefined;
});

async function startBudgetStack(
  budgets: Record<string, unknown>,
  groups: string[] = [],
  extra: Record<string, unknown> = {},
): Promise<FaultyStack> {
  stack = await startFaultyStack({ auth: { failed_auth_per_minute: 0 }, budgets, ...extra });
  stack.provider.extraClaims = { groups };
  return stack;
}

async function signedIn(running: FaultyStack): Promise<Browserless> {
  const browser = new Browserless();
  await signInForSession(running, browser);
  return browser;
}

function words(count: number): string {
  return Array.from({ length: count }, (_, i) => `w${i}`).join(' ');
}

/** A chat request whose answer costs `count` prompt tokens and `count + 2` completion tokens. */
function chat(key: string, count: number, extra: Record<string, unknown> = {}): Promise<Response> {
  return fetch(`${stack!.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo-small', messages: [{ role: 'user', content: words(count) }], ...extra }),
  });
}

async function budgetsOf(key: string): Promise<BudgetStatus[]> {
  const answer = await fetch(`${stack!.url}/v1/auth/budgets`, { headers: { authorization: `Bearer ${key}` } });
  expect(answer.status).toBe(200);
  return ((await answer.json()) as { data: BudgetStatus[] }).data;
}

/** Settling runs after the answer ends: waits until the user's budget shows `used`. */
async function settledTo(key: string, used: number, scope: BudgetStatus['scope'] = 'user'): Promise<void> {
  await expect
    .poll(async () => (await budgetsOf(key)).find((status) => status.scope === scope)?.used, { timeout: 5_000 })
    .toBe(used);
}

describe('budgets', () => {
  it('refuses with 429 budget_exceeded naming the budget and its reset once it is used up, warning at 80 %', async () => {
    const running = await startBudgetStack({ per_user: { tokens: 100, period: 'day' } });
    const { key } = await createKey(running, await signedIn(running));

    const first = await chat(key, 20);
    expect(first.status).toBe(200);
    expect(first.headers.get('x-budget-remaining')).toBe('100 tokens');
    expect(first.headers.get('x-warning')).toBeNull();
    await first.text();
    await settledTo(key, 42);

    const second = await chat(key, 20);
    expect(second.headers.get('x-budget-remaining')).toBe('58 tokens');
    await second.text();
    await settledTo(key, 84);

    // Room is left (16 tokens), so the request is admitted and may overspend by itself.
    const third = await chat(key, 20);
    expect(third.status).toBe(200);
    expect(third.headers.get('x-warning')).toMatch(/^84% of the daily user budget \(100 tokens\) is used\.$/);
    await third.text();
    await settledTo(key, 126);

    const refused = await chat(key, 1);
    const body = await expectApiError(refused, 429, 'budget_exceeded');
    expect(body.error.message).toMatch(
      /^Your daily budget of 100 tokens \(user budget\) is used up; it resets at \d{4}-\d\d-\d\dT00:00:00\.000Z/,
    );
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(86_400);
  });

  it('gives a user in several groups the most generous group budget, and names the group when it runs out', async () => {
    const running = await startBudgetStack(
      {
        per_user: { tokens: 10 },
        groups: { 'llm-interns': { tokens: 50, period: 'month' }, research: { tokens: 60, period: 'month' } },
      },
      ['llm-interns', 'research', 'unbudgeted'],
    );
    const { key } = await createKey(running, await signedIn(running));
    const [status] = await budgetsOf(key);
    expect(status).toMatchObject({ scope: 'group', group: 'research', limit: 60, period: 'month', used: 0 });
    (await chat(key, 30)).body?.cancel();
    await settledTo(key, 62, 'group');
    const body = await expectApiError(await chat(key, 1), 429, 'budget_exceeded');
    expect(body.error.message).toContain('Your group "research"\'s monthly budget of 60 tokens (group budget)');
  });

  it('caps a key budget by its owner and enforces it on the key alone', async () => {
    const running = await startBudgetStack({ per_user: { tokens: 1_000, period: 'week' } });
    const browser = await signedIn(running);
    const tooHigh = await browser.fetch(`${running.url}/v1/auth/api-keys`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: running.url },
      body: JSON.stringify({ name: 'greedy', budget: { tokens: 200, period: 'day' } }),
    });
    const refusal = await expectApiError(tooHigh, 400, 'budget_too_high');
    expect(refusal.error.message).toContain('1000 tokens per week');

    const capped = await createKey(running, browser, { budget: { tokens: 50, period: 'day' } });
    expect((capped as unknown as { budget: unknown }).budget).toEqual({ tokens: 50, spend: null, period: 'day' });
    const other = await createKey(running, browser);
    (await chat(capped.key, 30)).body?.cancel();
    await settledTo(capped.key, 62, 'key');
    const body = await expectApiError(await chat(capped.key, 1), 429, 'budget_exceeded');
    expect(body.error.message).toMatch(/^This API key's daily budget of 50 tokens \(key budget\)/);
    // The owner's other key still has room in the owner's budget.
    expect((await chat(other.key, 1)).status).toBe(200);
  });

  it('records the cost of each request at the model price in usage, and refuses once the spend budget is used', async () => {
    const running = await startBudgetStack({
      currency: 'EUR',
      prices: { 'demo-small': { input: 1_000, output: 2_000 } },
      per_user: { spend: 0.1, period: 'month' },
    });
    const { key } = await createKey(running, await signedIn(running));
    const answer = await chat(key, 10);
    expect(answer.headers.get('x-budget-remaining')).toBe('0.10 EUR');
    await answer.text();
    // 10 prompt tokens at 1000 EUR per million and 12 completion tokens at 2000: 0.034 EUR.
    await settledTo(key, 0.034);
    await expect
      .poll(
        async () => {
          const usage = await fetch(`${running.url}/v1/auth/usage`, { headers: { authorization: `Bearer ${key}` } });
          return ((await usage.json()) as { data: UsageRow[] }).data[0]?.cost_micros;
        },
        { timeout: 5_000 },
      )
      .toBe(34_000);
    (await chat(key, 40)).body?.cancel();
    await settledTo(key, 0.034 + 0.124);
    await expectApiError(await chat(key, 1), 429, 'budget_exceeded');
  });
});

/** A streamed chat, read to the end: its status and the `data:` payloads of its events. */
async function streamed(key: string, count: number, extra: Record<string, unknown> = {}) {
  const answer = await chat(key, count, { stream: true, ...extra });
  const text = await answer.text();
  const payloads = text
    .split(/\r?\n\r?\n/)
    .filter((event) => event.trim() !== '')
    .map((event) => event.replace(/^data: ?/, ''));
  return { status: answer.status, payloads };
}

describe('budgets shared through Redis', () => {
  it.skipIf(!redisAvailable)('admits, settles and refuses with the counters in Redis', async () => {
    const prefix = `test-budgets-e2e-${Date.now()}:`;
    try {
      const running = await startBudgetStack({ per_user: { tokens: 50, period: 'day' } }, [], {
        redis: { url: REDIS_URL, key_prefix: prefix },
      });
      const { key } = await createKey(running, await signedIn(running));
      const first = await chat(key, 20);
      expect(first.headers.get('x-budget-remaining')).toBe('50 tokens');
      await first.text();
      await settledTo(key, 42);
      (await chat(key, 1)).body?.cancel();
      await settledTo(key, 46);
      const second = await chat(key, 20);
      expect(second.headers.get('x-warning')).toMatch(/^92% of the daily user budget/);
      await second.text();
      await settledTo(key, 88);
      await expectApiError(await chat(key, 1), 429, 'budget_exceeded');
    } finally {
      await deleteRedisKeys(prefix);
    }
  });
});

describe('budgets under concurrent streams', () => {
  it('lets twenty concurrent streams of one user overspend by less than one request estimate', async () => {
    const limit = 500;
    const running = await startBudgetStack({ per_user: { tokens: limit, period: 'month' } });
    const { key } = await createKey(running, await signedIn(running));
    const maxTokens = 30;
    const body = JSON.stringify({
      model: 'demo-small',
      messages: [{ role: 'user', content: words(20) }],
      stream: true,
      max_tokens: maxTokens,
    });
    // The reservation: a quarter token per body byte for the prompt, plus max_tokens.
    const estimate = Math.ceil(Buffer.byteLength(body) / 4) + maxTokens;
    let admitted = 0;
    let waves = 0;
    for (; waves < 10; waves++) {
      const answers = await Promise.all(Array.from({ length: 20 }, () => streamed(key, 20, { max_tokens: maxTokens })));
      const served = answers.filter((answer) => answer.status === 200);
      expect(answers.every((answer) => answer.status === 200 || answer.status === 429)).toBe(true);
      // Each served stream is whole: this budget does not cut streams.
      for (const answer of served) expect(answer.payloads.at(-1)).toBe('[DONE]');
      admitted += served.length;
      await settledTo(key, admitted * 42);
      if (served.length === 0) break;
    }
    const used = admitted * 42;
    console.log(
      `20 concurrent streams per wave, ${waves} waves: ${admitted} admitted, ${used} tokens used of ${limit} ` +
        `(overspend ${Math.max(0, used - limit)}, bound ${estimate - 1} = one estimate - 1)`,
    );
    expect(used).toBeGreaterThanOrEqual(limit);
    expect(used - limit).toBeLessThan(estimate);
  });

  it('cuts a stream with a final OpenAI-shaped error event when budgets.cut_streams is on', async () => {
    const running = await startBudgetStack({
      per_user: { tokens: 200, period: 'day' },
      cut_streams: true,
      reserve_tokens: 1,
    });
    const { key } = await createKey(running, await signedIn(running));
    const cut = await streamed(key, 200);
    expect(cut.status).toBe(200);
    const last = JSON.parse(cut.payloads.at(-1)!) as { error: Record<string, unknown> };
    expect(last.error).toMatchObject({ type: 'rate_limit_error', code: 'budget_exceeded', param: null });
    expect(cut.payloads).not.toContain('[DONE]');
    const chunks = cut.payloads.slice(0, -1);
    expect(chunks.length).toBeGreaterThan(0);
    expect(chunks.length).toBeLessThan(202);
    // Charged what was counted (the prompt's estimate and the streamed words), so the next request is refused.
    await expect.poll(async () => (await budgetsOf(key))[0]?.used, { timeout: 5_000 }).toBeGreaterThan(200);
    await expectApiError(await chat(key, 1), 429, 'budget_exceeded');
  });

  it('lets a stream finish when budgets.cut_streams is off, and refuses the next request', async () => {
    const running = await startBudgetStack({ per_user: { tokens: 50, period: 'day' }, reserve_tokens: 1 });
    const { key } = await createKey(running, await signedIn(running));
    const whole = await streamed(key, 100);
    expect(whole.payloads.at(-1)).toBe('[DONE]');
    await settledTo(key, 202);
    await expectApiError(await chat(key, 1), 429, 'budget_exceeded');
  });
});

describe('seeing budgets', () => {
  it('shows admins spend by user and group with injection-safe CSV, lets them override a budget (audited), and counts per group', async () => {
    const running = await startBudgetStack(
      { prices: { 'demo-small': { input: 1_000, output: 1_000 } }, groups: { '=cmd|calc': { tokens: 1_000 } } },
      ['=cmd|calc', 'research'],
      { auth: { failed_auth_per_minute: 0, admin_emails: ['ada@example.test'] }, gateway: { metrics_port: 0 } },
    );
    const admin = await signedIn(running);
    const { key } = await createKey(running, admin);
    (await chat(key, 10)).body?.cancel();
    await settledTo(key, 22, 'group');

    // Usage rows are written every two seconds.
    const report = async () =>
      (await (await admin.fetch(`${running.url}/v1/auth/admin/spend`)).json()) as {
        users: Array<{ email: string; tokens: number; cost_micros: number }>;
        groups: Array<{ group: string; cost_micros: number }>;
      };
    await expect.poll(async () => (await report()).users[0]?.cost_micros, { timeout: 5_000 }).toBe(22_000);
    expect((await report()).groups.map((group) => group.group).sort()).toEqual(['=cmd|calc', 'research']);

    const csv = await admin.fetch(`${running.url}/v1/auth/admin/spend/groups.csv`);
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const rows = (await csv.text()).trimEnd().split('\r\n');
    expect(rows[0]).toBe('group,users,requests,tokens,spend_USD');
    expect(rows).toContain("'=cmd|calc,1,1,22,0.022000");
    const users = await (await admin.fetch(`${running.url}/v1/auth/admin/spend/users.csv`)).text();
    expect(users).toContain(',ada@example.test,');
    expect(users).toContain(",'=cmd|calc research,");

    const page = await (await admin.fetch(`${running.url}/v1/auth/admin`)).text();
    expect(page).toContain('Spend, last 30 days');
    expect(page).toContain('data-spend-group="=cmd|calc"');

    const override = await admin.fetch(`${running.url}/v1/auth/admin/budgets`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: running.url },
      body: JSON.stringify({ user: 'ada@example.test', spend: 0.01, period: 'week' }),
    });
    expect(override.status).toBe(200);
    const [status] = await budgetsOf(key);
    expect(status).toMatchObject({ scope: 'user', measure: 'spend', limit: 0.01, period: 'week', unit: 'USD' });
    await expectApiError(await chat(key, 1), 429, 'budget_exceeded');
    const changed = await admin.fetch(`${running.url}/v1/auth/admin/budgets`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: running.url },
      body: JSON.stringify({ user: 'ada@example.test', tokens: 5_000, period: 'day' }),
    });
    expect(changed.status).toBe(200);
    // Audit entries are stored off the request path.
    const auditedOverrides = async () =>
      (await (await admin.fetch(`${running.url}/v1/auth/admin/audit?event=budget_set`)).text())
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as AuditRecord);
    await expect.poll(async () => (await auditedOverrides()).length, { timeout: 5_000 }).toBe(2);
    const overrides = await auditedOverrides();
    const set = { actor_email: 'ada@example.test', target: 'ada@example.test', event: 'budget_set' };
    expect(overrides).toEqual([
      expect.objectContaining({
        ...set,
        detail: expect.objectContaining({ spend: 0.01, period: 'week', previous_spend: null, previous_period: null }),
      }),
      expect.objectContaining({
        ...set,
        detail: expect.objectContaining({
          tokens: 5_000,
          spend: null,
          period: 'day',
          previous_tokens: null,
          previous_spend: 0.01,
          previous_period: 'week',
          currency: 'USD',
        }),
      }),
    ]);

    const metrics = await running.gateway.metrics!.registry.metrics();
    expect(metrics).toContain('gatehouse_budget_tokens_total{group="=cmd|calc"} 22');
    expect(metrics).toContain('gatehouse_budget_refusals_total{scope="user"} 1');
  });

  it('shows each budget with used, remaining and reset, and a cost column, on the account page', async () => {
    const running = await startBudgetStack({
      prices: { 'demo-small': { input: 1_000, output: 1_000 } },
      per_user: { tokens: 1_000, period: 'week' },
    });
    const browser = await signedIn(running);
    const { key } = await createKey(running, browser, { name: 'capped', budget: { spend: 1, period: 'day' } });
    (await chat(key, 10)).body?.cancel();
    await settledTo(key, 22);
    await expect
      .poll(
        async () => (await (await browser.fetch(`${running.url}/v1/auth/account`)).text()).includes('<th>Cost</th>'),
        {
          timeout: 5_000,
        },
      )
      .toBe(true);
    const page = await (await browser.fetch(`${running.url}/v1/auth/account`)).text();
    expect(page).toContain('<h2>Budgets</h2>');
    expect(page).toMatch(/you: 1000 tokens<\/td>\s*<td>week<\/td>\s*<td>22 tokens \(2%\)<\/td>\s*<td>978 tokens<\/td>/);
    expect(page).toMatch(/key capped: 1\.00 USD<\/td>\s*<td>day<\/td>\s*<td>0\.02 USD \(2%\)<\/td>/);
    expect(page).toContain('<th>Cost</th>');
    expect(page).toContain('name="budget_tokens"');
  });
});
