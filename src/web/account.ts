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
  maxDays?: number;
  /** Per day and key, the last 30 days. */
  usage: UsageRow[];
  /** One-time value that makes a resubmitted form (a reload) create nothing. */
  formToken: string;
  now: number;
}

const DAY_MS = 86_400_000;
const EXPIRY_WARNING_DAYS = 7;

function day(ms: number | null): string {
  return ms === null ? '—' : new Date(ms).toISOString().slice(0, 10);
}

function keyState(key: ApiKeyInfo, now: number): SafeHtml {
  if (key.revoked_at !== null) return html`<span class="badge revoked">revoked</span>`;
  if (key.expires_at !== null && key.expires_at <= now) return html`<span class="badge expired">expired</span>`;
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

function keyActions(key: ApiKeyInfo, formToken: string): SafeHtml {
  const id = encodeURIComponent(key.id);
  return html`<form class="inline" method="post" action="/v1/auth/account/keys/${id}/rotate" data-confirm="Rotate “${key.name}”? You get a new secret; the old one keeps working for one hour.">
      <input type="hidden" name="form_token" value="${formToken}-${key.id}" />
      <input type="hidden" name="grace_minutes" value="60" />
      <button type="submit" class="secondary">Rotate</button>
    </form>
    <form class="inline" method="post" action="/v1/auth/account/keys/${id}/revoke" data-confirm="Revoke the key “${key.name}”? Programs using it will stop working at once.">
      <button type="submit" class="danger">Revoke</button>
    </form>`;
}

function keyRow(key: ApiKeyInfo, formToken: string, now: number): SafeHtml {
  const usable = key.revoked_at === null && (key.expires_at === null || key.expires_at > now);
  return html`<tr data-key-id="${key.id}">
    <td>${key.name}</td>
    <td><code>${key.stub}</code></td>
    <td>${controlsSummary(key)}</td>
    <td class="nowrap">${day(key.created_at)}</td>
    <td class="nowrap">${key.last_used_at === null ? 'never' : day(key.last_used_at)}</td>
    <td class="nowrap">${day(key.expires_at)}</td>
    <td>${keyState(key, now)}</td>
    <td class="nowrap">${usable ? keyActions(key, formToken) : ''}</td>
  </tr>`;
}

function createdNotice(created: CreatedApiKey): SafeHtml {
  return html`<section class="notice" id="new-key">
    <strong>Your new key “${created.name}”.</strong> Copy it now: it will not be shown again.
    <div class="secret">
      <input id="new-key-value" type="text" readonly value="${created.key}" aria-label="New API key" />
      <button type="button" class="secondary" id="copy-key" data-copy-target="new-key-value">Copy</button>
    </div>
    <p class="muted">
      Use it as <code>Authorization: Bearer &lt;key&gt;</code>, e.g. with the OpenAI or Lamini client.
    </p>
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

function usageSection(keys: ApiKeyInfo[], usage: UsageRow[], now: number): SafeHtml {
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
    }
  }
  return html`${usageChart(usage, now)}
    <table>
      <thead>
        <tr><th>Key</th><th>Requests</th><th>Prompt tokens</th><th>Completion tokens</th><th>Errors</th></tr>
      </thead>
      <tbody>
        ${[...totals.values()].map(
          (row) => html`<tr data-usage-key="${row.key_id}">
            <td>${row.key_id === 'session' ? 'browser session' : (names.get(row.key_id) ?? row.key_id)}</td>
            <td>${row.requests}</td>
            <td>${row.prompt_tokens}</td>
            <td>${row.completion_tokens}</td>
            <td>${row.status_4xx + row.status_5xx}</td>
          </tr>`,
        )}
      </tbody>
    </table>`;
}

/** The account page: who is signed in, their keys and usage, a form to create a key, and sign-out. */
export function renderAccountPage(model: AccountPageModel): SafeHtml {
  const { user, keys, olderKeysAfter, created, error, maxDays, usage, formToken, now } = model;
  return html`<header class="top">
      <div>
        <h1>Your account</h1>
        <p class="muted">
          Signed in as
          <strong>${user.name ?? user.email ?? user.subject}</strong>${user.email ? html` · ${user.email}` : ''}
        </p>
      </div>
      <a class="button secondary" href="/v1/auth/logout">Sign out</a>
    </header>
    ${created ? createdNotice(created) : ''} ${error ? html`<p class="notice" role="alert">${error}</p>` : ''}
    <h2>API keys</h2>
    ${
      keys.length
        ? html`<div class="scroll"><table>
            <thead>
              <tr><th>Name</th><th>Key</th><th>Allows</th><th>Created</th><th>Last used</th><th>Expires</th><th>State</th><th></th></tr>
            </thead>
            <tbody>
              ${keys.map((key) => keyRow(key, formToken, now))}
            </tbody>
          </table></div>`
        : html`<p class="empty">You have no API keys yet.</p>`
    }
    ${olderKeysAfter ? html`<p><a href="/v1/auth/account?after=${encodeURIComponent(olderKeysAfter)}">Older keys</a></p>` : ''}
    <h2>Usage, last 30 days</h2>
    ${usageSection(keys, usage, now)}
    <h2>Create a key</h2>
    <form class="create" method="post" action="/v1/auth/account/keys">
      <input type="hidden" name="form_token" value="${formToken}" />
      <label>Name <input type="text" name="name" required maxlength="100" placeholder="e.g. laptop notebook" /></label>
      <label>Expires in days
        <input type="number" name="expires_in_days" min="1" ${maxDays ? html`max="${maxDays}" placeholder="${maxDays}"` : html`placeholder="never"`} /></label>
      <fieldset class="scopes">
        <legend>Scopes (none ticked: all)</legend>
        <label class="check"><input type="checkbox" name="scopes" value="inference" /> inference</label>
        <label class="check"><input type="checkbox" name="scopes" value="training" /> training</label>
        <label class="check"><input type="checkbox" name="scopes" value="read" /> read</label>
        <label class="check"><input type="checkbox" name="scopes" value="keys" /> keys (manage your keys)</label>
        ${user.role === 'admin' ? html`<label class="check"><input type="checkbox" name="scopes" value="admin" /> admin (admin API)</label>` : ''}
      </fieldset>
      <label>Models <input type="text" name="models" placeholder="any (or a,b,c)" /></label>
      <label>Requests/min <input type="number" name="requests_per_minute" min="1" placeholder="default" /></label>
      <label>Tokens/min <input type="number" name="tokens_per_minute" min="1" placeholder="default" /></label>
      <button type="submit">Create key</button>
    </form>
    <script src="${ACCOUNT_SCRIPT_PATH}"></script>`;
}
