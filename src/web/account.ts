import type { BudgetStatus } from '../budgets/budgets.js';
import type { ApiKeyInfo, CreatedApiKey } from '../keys/store.js';
import type { UsageRow } from '../usage/recorder.js';
import type { User } from '../users/store.js';
import { html, type SafeHtml } from './html.js';
import { ACCOUNT_SCRIPT_PATH } from './pages.js';

export interface AccountPageModel {
  user: User;
  /** One page of keys, newest first. */
  keys: ApiKeyInfo[];
  /** Set when older keys follow: the id to page on from. */
  olderKeysAfter?: string;
  /** A key created (or rotated) by this very request: its secret is shown this once. */
  created?: CreatedApiKey;
  error?: string;
  /** What the person just did, confirmed at the top of the page. */
  done?: AccountAction;
  /** What the person typed into the create form, kept when it is shown again with an error. */
  form?: KeyForm;
  maxDays?: number;
  /** The website people and programs reach the gateway at: the base URL the snippets use. */
  website: string;
  /** Per day and key, the last 30 days. */
  usage: UsageRow[];
  /** One-time value that makes a resubmitted form (a reload) create nothing. */
  formToken: string;
  now: number;
  /** Present when budgets are on: each of the person's budgets this period, in `currency`. */
  budgets?: { statuses: BudgetStatus[]; currency: string };
}

export type AccountAction = 'revoked' | 'removed';

export interface KeyForm {
  name?: string;
  expires_in_days?: string;
  scopes?: string[];
  models?: string;
  requests_per_minute?: string;
  tokens_per_minute?: string;
}

const DONE_MESSAGES: Record<AccountAction, string> = {
  revoked: 'The key was revoked: programs using it are refused from now on.',
  removed: 'The key was removed from your list.',
};

const DAY_MS = 86_400_000;
const EXPIRY_WARNING_DAYS = 7;

function day(ms: number | null): string {
  return ms === null ? '—' : new Date(ms).toISOString().slice(0, 10);
}

/** HH:MM in UTC, said so: the page is rendered on the server, which does not know the reader's zone. */
function clock(ms: number): string {
  return `${new Date(ms).toISOString().slice(11, 16)} UTC`;
}

function keyState(key: ApiKeyInfo, keys: ApiKeyInfo[], now: number): SafeHtml {
  if (key.revoked_at !== null) return html`<span class="badge revoked">revoked</span>`;
  if (key.expires_at !== null && key.expires_at <= now) return html`<span class="badge expired">expired</span>`;
  if (key.replaced_by !== null) {
    const replacement = keys.find((other) => other.id === key.replaced_by);
    // A rotated key's expiry is the end of its grace: minutes away, not "in 1 day".
    return html`<span class="badge expiring">replaced</span>
      <div class="small muted">
        by ${replacement ? html`<code>${replacement.stub}</code>` : 'a newer key'}${key.expires_at === null ? '' : `, works until ${clock(key.expires_at)}`}
      </div>`;
  }
  if (key.expires_at !== null && key.expires_at - now < EXPIRY_WARNING_DAYS * DAY_MS) {
    const days = Math.max(1, Math.ceil((key.expires_at - now) / DAY_MS));
    return html`<span class="badge expiring">expires in ${days} day${days === 1 ? '' : 's'}</span>`;
  }
  return html`<span class="badge">active</span>`;
}

function controlsSummary(key: ApiKeyInfo): SafeHtml {
  const limits = [
    key.requests_per_minute ? `${key.requests_per_minute} req/min` : '',
    key.tokens_per_minute ? `${key.tokens_per_minute} tok/min` : '',
  ].filter(Boolean);
  return html`<div class="small">${key.scopes.join(', ')}</div>
    ${key.models ? html`<div class="small muted">models: ${key.models.join(', ')}</div>` : ''}
    ${limits.length ? html`<div class="small muted">${limits.join(' · ')}</div>` : ''}`;
}

function keyActions(key: ApiKeyInfo, formToken: string, now: number): SafeHtml {
  const id = encodeURIComponent(key.id);
  const usable = key.revoked_at === null && (key.expires_at === null || key.expires_at > now);
  if (!usable) {
    return html`<form class="inline" method="post" action="/v1/auth/account/keys/${id}/remove" data-confirm="Remove “${key.name}” from your list? It no longer works either way.">
      <button type="submit" class="secondary">Remove</button>
    </form>`;
  }
  const rotate =
    key.replaced_by === null
      ? html`<form class="inline" method="post" action="/v1/auth/account/keys/${id}/rotate" data-confirm="Rotate “${key.name}”? You get a new secret; the old one keeps working for one hour.">
      <input type="hidden" name="form_token" value="${formToken}-${key.id}" />
      <input type="hidden" name="grace_minutes" value="60" />
      <button type="submit" class="secondary">Rotate</button>
    </form>`
      : '';
  return html`${rotate}
    <form class="inline" method="post" action="/v1/auth/account/keys/${id}/revoke" data-confirm="Revoke the key “${key.name}”? Programs using it will stop working at once.">
      <button type="submit" class="danger">Revoke</button>
    </form>`;
}

function keyRow(key: ApiKeyInfo, keys: ApiKeyInfo[], formToken: string, now: number): SafeHtml {
  return html`<tr data-key-id="${key.id}">
    <td data-label="Name" class="name">${key.name}</td>
    <td data-label="Key"><code>${key.stub}</code></td>
    <td data-label="Allows">${controlsSummary(key)}</td>
    <td data-label="Created" class="nowrap">${day(key.created_at)}</td>
    <td data-label="Last used" class="nowrap">${key.last_used_at === null ? 'never' : day(key.last_used_at)}</td>
    <td data-label="Expires" class="nowrap">${day(key.expires_at)}</td>
    <td data-label="State">${keyState(key, keys, now)}</td>
    <td class="nowrap actions">${keyActions(key, formToken, now)}</td>
  </tr>`;
}

/** Copy-ready snippets for the clients people use; `key` is the secret when it is shown, else a placeholder. */
function howToUse(website: string, key: string | undefined, open: boolean): SafeHtml {
  const base = website.replace(/\/+$/, '');
  const secret = key ?? 'YOUR_API_KEY';
  const snippets = [
    {
      id: 'python',
      title: 'OpenAI Python SDK',
      code: `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}/v1", api_key="${secret}")\nprint(client.models.list())`,
    },
    {
      id: 'js',
      title: 'OpenAI JavaScript SDK',
      code: `import OpenAI from 'openai';\n\nconst client = new OpenAI({ baseURL: '${base}/v1', apiKey: '${secret}' });\nconsole.log(await client.models.list());`,
    },
    { id: 'curl', title: 'curl', code: `curl ${base}/v1/models \\\n  -H "Authorization: Bearer ${secret}"` },
    {
      id: 'lamini',
      title: 'Lamini client',
      code: `import lamini\n\nlamini.api_url = "${base}"\nlamini.api_key = "${secret}"`,
    },
  ];
  return html`<details class="howto" ${open ? html`open` : ''}>
    <summary>How to use ${key ? 'this key' : 'a key'}</summary>
    <p class="small">Base URL: <code>${base}</code> (OpenAI-compatible clients: <code>${base}/v1</code>). Send the key as <code>Authorization: Bearer &lt;key&gt;</code>.</p>
    ${snippets.map(
      (snippet) => html`<div class="snippet-head">
          <span class="small">${snippet.title}</span>
          <button type="button" class="secondary" data-copy-target="snippet-${snippet.id}">Copy</button>
        </div>
        <pre class="snippet" id="snippet-${snippet.id}">${snippet.code}</pre>`,
    )}
  </details>`;
}

function createdNotice(created: CreatedApiKey, website: string): SafeHtml {
  return html`<section class="notice" id="new-key">
    <strong>Your new key “${created.name}”.</strong> Copy it now: it will not be shown again.
    <div class="secret">
      <input id="new-key-value" type="text" readonly value="${created.key}" aria-label="New API key" />
      <button type="button" class="secondary" id="copy-key" data-copy-target="new-key-value">Copy</button>
    </div>
    ${howToUse(website, created.key, true)}
  </section>`;
}

/** Requests per day over 30 days as bars: SVG attributes only, as the page allows no inline style. */
function usageChart(usage: UsageRow[], now: number): SafeHtml {
  const perDay = new Map<string, number>();
  for (const row of usage) perDay.set(row.day, (perDay.get(row.day) ?? 0) + row.requests);
  const days = Array.from({ length: 30 }, (_, i) => day(now - (29 - i) * DAY_MS));
  const highest = Math.max(1, ...days.map((d) => perDay.get(d) ?? 0));
  const bars = days.map((d, i) => {
    const count = perDay.get(d) ?? 0;
    const height = Math.round((count / highest) * 60);
    return html`<rect x="${i * 12}" y="${62 - height}" width="9" height="${Math.max(height, 1)}" fill="${count ? '#2f5bea' : '#dde1ea'}"><title>${d}: ${count} requests</title></rect>`;
  });
  return html`<svg class="chart" viewBox="0 0 360 64" width="360" height="64" role="img" aria-label="Requests per day, last 30 days">${bars}</svg>`;
}

function amount(status: BudgetStatus, value: number): string {
  return status.measure === 'tokens' ? `${Math.round(value)} tokens` : `${value.toFixed(2)} ${status.unit}`;
}

/** Each budget with what is used and left this period and when it resets. */
function budgetsSection(statuses: BudgetStatus[], keys: ApiKeyInfo[]): SafeHtml {
  if (statuses.length === 0) return html`<p class="empty">No budget limits your use.</p>`;
  const names = new Map(keys.map((key) => [key.id, key.name]));
  const whose = (status: BudgetStatus) =>
    status.scope === 'group'
      ? `group ${status.group}`
      : status.scope === 'key'
        ? `key ${names.get(status.key_id ?? '') ?? status.key_id}`
        : 'you';
  return html`<div class="scroll"><table class="budgets">
      <thead>
        <tr><th>Budget</th><th>Per</th><th>Used</th><th>Remaining</th><th>Resets</th></tr>
      </thead>
      <tbody>
        ${statuses.map(
          (status) => html`<tr data-budget-scope="${status.scope}">
            <td>${whose(status)}: ${amount(status, status.limit)}</td>
            <td>${status.period}</td>
            <td>${amount(status, status.used)} (${Math.min(100, Math.floor((100 * status.used) / status.limit))}%)</td>
            <td>${amount(status, status.remaining)}</td>
            <td>${status.resets_at.slice(0, 16).replace('T', ' ')} UTC</td>
          </tr>`,
        )}
      </tbody>
    </table></div>`;
}

function usageSection(keys: ApiKeyInfo[], usage: UsageRow[], now: number, currency?: string): SafeHtml {
  if (usage.length === 0) return html`<p class="empty">No usage in the last 30 days.</p>`;
  const names = new Map(keys.map((key) => [key.id, key.name]));
  const totals = new Map<string, UsageRow>();
  for (const row of usage) {
    const total = totals.get(row.key_id);
    if (!total) totals.set(row.key_id, { ...row });
    else {
      total.requests += row.requests;
      total.prompt_tokens += row.prompt_tokens;
      total.completion_tokens += row.completion_tokens;
      total.status_4xx += row.status_4xx;
      total.status_5xx += row.status_5xx;
      total.cost_micros += row.cost_micros;
    }
  }
  return html`${usageChart(usage, now)}
    <table>
      <thead>
        <tr><th>Key</th><th>Requests</th><th>Prompt tokens</th><th>Completion tokens</th><th>Errors</th>${currency ? html`<th>Cost</th>` : ''}</tr>
      </thead>
      <tbody>
        ${[...totals.values()].map(
          (row) => html`<tr data-usage-key="${row.key_id}">
            <td>${row.key_id === 'session' ? 'browser session' : (names.get(row.key_id) ?? row.key_id)}</td>
            <td>${row.requests}</td>
            <td>${row.prompt_tokens}</td>
            <td>${row.completion_tokens}</td>
            <td>${row.status_4xx + row.status_5xx}</td>
            ${currency ? html`<td>${(row.cost_micros / 1_000_000).toFixed(2)} ${currency}</td>` : ''}
          </tr>`,
        )}
      </tbody>
    </table>`;
}

/** A key's own budget, capped by the owner's (checked when the key is created). */
function keyBudgetFields(currency: string): SafeHtml {
  return html`<label>Budget tokens <input type="number" name="budget_tokens" min="1" placeholder="none" /></label>
    <label>Budget ${currency} <input type="number" name="budget_spend" min="0.01" step="0.01" placeholder="none" /></label>
    <label>Budget per
      <select name="budget_period"><option value="month">month</option><option value="week">week</option><option value="day">day</option></select></label>`;
}

/** The account page: who is signed in, their keys and usage, a form to create a key, and sign-out. */
export function renderAccountPage(model: AccountPageModel): SafeHtml {
  const { user, keys, olderKeysAfter, created, error, done, maxDays, usage, formToken, now, website } = model;
  const form = model.form ?? {};
  const ticked = (scope: string) => (form.scopes?.includes(scope) ? html`checked` : '');
  return html`<header class="top">
      <div>
        <h1>Your account</h1>
        <p class="muted">
          Signed in as
          <strong>${user.name ?? user.email ?? user.subject}</strong>${user.email ? html` · ${user.email}` : ''}
        </p>
      </div>
      <div class="actions">
        ${user.role === 'admin' ? html`<a class="button secondary" href="/v1/auth/admin">Admin console</a>` : ''}
        <a class="button secondary" href="/v1/auth/logout">Sign out</a>
      </div>
    </header>
    ${created ? createdNotice(created, website) : ''}
    ${error ? html`<p class="notice error" role="alert">${error}</p>` : ''}
    ${done ? html`<p class="notice done" role="status">${DONE_MESSAGES[done]}</p>` : ''}
    <h2>API keys</h2>
    ${
      keys.length
        ? html`<div class="scroll"><table class="keys">
            <thead>
              <tr><th>Name</th><th>Key</th><th>Allows</th><th>Created</th><th>Last used</th><th>Expires</th><th>State</th><th></th></tr>
            </thead>
            <tbody>
              ${keys.map((key) => keyRow(key, keys, formToken, now))}
            </tbody>
          </table></div>`
        : html`<p class="empty">You have no API keys yet.</p>`
    }
    ${created ? '' : howToUse(website, undefined, false)}
    ${olderKeysAfter ? html`<p><a href="/v1/auth/account?after=${encodeURIComponent(olderKeysAfter)}">Older keys</a></p>` : ''}
    ${model.budgets ? html`<h2>Budgets</h2>${budgetsSection(model.budgets.statuses, keys)}` : ''}
    <h2>Usage, last 30 days</h2>
    ${usageSection(keys, usage, now, model.budgets?.currency)}
    <h2>Create a key</h2>
    <form class="create" method="post" action="/v1/auth/account/keys">
      <input type="hidden" name="form_token" value="${formToken}" />
      <label>Name <input type="text" name="name" required maxlength="100" placeholder="e.g. laptop notebook" value="${form.name ?? ''}" /></label>
      <label>Expires in days
        <input type="number" name="expires_in_days" min="1" value="${form.expires_in_days ?? ''}" ${maxDays ? html`max="${maxDays}" placeholder="${maxDays}"` : html`placeholder="never"`} /></label>
      <fieldset class="scopes">
        <legend>Scopes (none ticked: all)</legend>
        <label class="check"><input type="checkbox" name="scopes" value="inference" ${ticked('inference')} /> inference</label>
        <label class="check"><input type="checkbox" name="scopes" value="training" ${ticked('training')} /> training</label>
        <label class="check"><input type="checkbox" name="scopes" value="read" ${ticked('read')} /> read</label>
        <label class="check"><input type="checkbox" name="scopes" value="keys" ${ticked('keys')} /> keys (manage your keys)</label>
        ${user.role === 'admin' ? html`<label class="check"><input type="checkbox" name="scopes" value="admin" ${ticked('admin')} /> admin (admin API)</label>` : ''}
      </fieldset>
      <label>Models <input type="text" name="models" placeholder="any (or a,b,c)" value="${form.models ?? ''}" /></label>
      <label>Requests/min <input type="number" name="requests_per_minute" min="1" placeholder="default" value="${form.requests_per_minute ?? ''}" /></label>
      <label>Tokens/min <input type="number" name="tokens_per_minute" min="1" placeholder="default" value="${form.tokens_per_minute ?? ''}" /></label>
      ${model.budgets ? keyBudgetFields(model.budgets.currency) : ''}
      <button type="submit">Create key</button>
    </form>
    <script src="${ACCOUNT_SCRIPT_PATH}"></script>`;
}
