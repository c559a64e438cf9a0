import type { ApiKeyInfo, CreatedApiKey } from '../keys/store.js';
import type { User } from '../users/store.js';
import { html, type SafeHtml } from './html.js';
import { ACCOUNT_SCRIPT_PATH } from './pages.js';

export interface AccountPageModel {
  user: User;
  keys: ApiKeyInfo[];
  /** A key created by this very request: its secret is shown this once. */
  created?: CreatedApiKey;
  error?: string;
  maxDays?: number;
  /** One-time value that makes a resubmitted form (a reload) create nothing. */
  formToken: string;
  now: number;
}

function day(ms: number | null): string {
  return ms === null ? '—' : new Date(ms).toISOString().slice(0, 10);
}

function keyState(key: ApiKeyInfo, now: number): SafeHtml {
  if (key.revoked_at !== null) return html`<span class="badge revoked">revoked</span>`;
  if (key.expires_at !== null && key.expires_at <= now) return html`<span class="badge expired">expired</span>`;
  return html`<span class="badge">active</span>`;
}

function keyRow(key: ApiKeyInfo, now: number): SafeHtml {
  const usable = key.revoked_at === null && (key.expires_at === null || key.expires_at > now);
  return html`<tr data-key-id="${key.id}">
    <td>${key.name}</td>
    <td><code>${key.stub}</code></td>
    <td>${day(key.created_at)}</td>
    <td>${key.last_used_at === null ? 'never' : day(key.last_used_at)}</td>
    <td>${day(key.expires_at)}</td>
    <td>${keyState(key, now)}</td>
    <td>
      ${
        usable
          ? html`<form
              class="inline"
              method="post"
              action="/v1/auth/account/keys/${encodeURIComponent(key.id)}/revoke"
              data-confirm="Revoke the key “${key.name}”? Programs using it will stop working at once."
            >
              <button type="submit" class="danger">Revoke</button>
            </form>`
          : ''
      }
    </td>
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

/** The account page: who is signed in, their keys, a form to create one, and sign-out. */
export function renderAccountPage(model: AccountPageModel): SafeHtml {
  const { user, keys, created, error, maxDays, formToken, now } = model;
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
        ? html`<table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Key</th>
                <th>Created</th>
                <th>Last used</th>
                <th>Expires</th>
                <th>State</th>
                <th></th>
              </tr>
            </thead>
            <tbody>
              ${keys.map((key) => keyRow(key, now))}
            </tbody>
          </table>`
        : html`<p class="empty">You have no API keys yet.</p>`
    }
    <h2>Create a key</h2>
    <form class="create" method="post" action="/v1/auth/account/keys">
      <input type="hidden" name="form_token" value="${formToken}" />
      <label>Name <input type="text" name="name" required maxlength="100" placeholder="e.g. laptop notebook" /></label>
      <label
        >Expires in days
        <input
          type="number"
          name="expires_in_days"
          min="1"
          ${maxDays ? html`max="${maxDays}" placeholder="${maxDays}"` : html`placeholder="never"`}
      /></label>
      <button type="submit">Create key</button>
    </form>
    <script src="${ACCOUNT_SCRIPT_PATH}"></script>`;
}
