import type { AuditRecord } from '../audit/log.js';
import type { ApiKeyInfo } from '../keys/store.js';
import type { UsageRow } from '../usage/recorder.js';
import type { User, UserOverview } from '../users/store.js';
import { html, type SafeHtml } from './html.js';
import { ACCOUNT_SCRIPT_PATH } from './pages.js';

export interface AdminPageModel {
  admin: User;
  users: UserOverview[];
  /** Totals per user id over the last 30 days. */
  usage: Map<string, UsageRow>;
  keys: Array<ApiKeyInfo & { user_id: string }>;
  /** Where the next page of users and of keys starts, when more follow. */
  more: { users?: string; keys?: string };
  events: AuditRecord[];
  filter: { since?: string; event?: string; actor?: string };
  eventNames: readonly string[];
  now: number;
  /** The name of the provider a user signs in with; set when there are several, adding a column. */
  providerOf?: (user: User) => string;
}

function when(ms: number | null): string {
  return ms === null ? '—' : new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
}

function disableQuestion(user: UserOverview): string {
  return `Disable ${user.email ?? user.subject}? Their sessions end and their keys stop working at once.`;
}

function userAction(user: UserOverview, self: User): SafeHtml {
  if (user.id === self.id) return html`<span class="muted small">you</span>`;
  const action = user.disabled ? 'enable' : 'disable';
  const confirm = action === 'disable' ? html` data-confirm="${disableQuestion(user)}"` : '';
  const label = action === 'disable' ? 'Disable' : 'Enable';
  return html`<form class="inline" method="post" action="/v1/auth/admin/users/${encodeURIComponent(user.id)}/${action}"${confirm}><button type="submit" class="${action === 'disable' ? 'danger' : 'secondary'}">${label}</button></form>`;
}

function userRow(
  user: UserOverview,
  self: User,
  usage: UsageRow | undefined,
  providerOf: AdminPageModel['providerOf'],
): SafeHtml {
  return html`<tr data-user-id="${user.id}">
<td>${user.email ?? user.subject}<div class="muted small">${user.name ?? ''}</div>${scimNote(user)}</td>
${providerOf ? html`<td class="provider">${providerOf(user)}</td>` : ''}
<td><span class="badge${user.role === 'admin' ? ' admin' : ''}">${user.role}</span></td>
<td class="nowrap">${when(user.created_at)}</td>
<td class="nowrap">${when(user.last_login_at)}</td>
<td>${user.key_count}</td>
<td>${user.active_sessions}</td>
<td>${usage?.requests ?? 0}</td>
<td>${(usage?.prompt_tokens ?? 0) + (usage?.completion_tokens ?? 0)}</td>
<td class="state">${user.disabled ? html`<span class="badge revoked">disabled</span>` : html`<span class="badge">active</span>`}</td>
<td>${userAction(user, self)}</td>
</tr>`;
}

function keyRow(key: ApiKeyInfo, now: number): SafeHtml {
  const revoked = key.revoked_at !== null;
  const expired = !revoked && key.expires_at !== null && key.expires_at <= now;
  return html`<tr data-key-id="${key.id}">
    <td>${key.owner_email ?? key.owner_subject}</td>
    <td>${key.name}</td>
    <td><code>${key.stub}</code></td>
    <td>${when(key.created_at)}</td>
    <td>${key.last_used_at === null ? 'never' : when(key.last_used_at)}</td>
    <td>
      ${revoked ? html`<span class="badge revoked">revoked</span>` : expired ? html`<span class="badge expired">expired</span>` : key.replaced_by !== null ? html`<span class="badge expiring" title="rotated; works until ${when(key.expires_at)} UTC">replaced</span>` : html`<span class="badge">active</span>`}
    </td>
    <td>
      ${
        revoked || expired
          ? ''
          : html`<form
              class="inline"
              method="post"
              action="/v1/auth/admin/keys/${encodeURIComponent(key.id)}/revoke"
              data-confirm="Revoke “${key.name}” of ${key.owner_email ?? key.owner_subject}?"
            >
              <button type="submit" class="danger">Revoke</button>
            </form>`
      }
    </td>
  </tr>`;
}

function eventRow(event: AuditRecord): SafeHtml {
  const detail = Object.entries(event.detail)
    .map(([key, value]) => `${key}=${String(value)}`)
    .join(' ');
  return html`<tr>
    <td class="nowrap">${event.at.slice(0, 19).replace('T', ' ')}</td>
    <td><code>${event.event}</code></td>
    <td>${event.actor_email ?? '—'}</td>
    <td>${event.target ?? ''}</td>
    <td>${event.client_address ?? ''}</td>
    <td class="muted small">${detail}</td>
  </tr>`;
}

/** The export link carries the same filters as the table beside it. */
function exportQuery(filter: AdminPageModel['filter']): string {
  const query = new URLSearchParams(
    Object.entries(filter).filter(
      (entry): entry is [string, string] => typeof entry[1] === 'string' && entry[1] !== '',
    ),
  ).toString();
  return query ? `?${query}` : '';
}

/** Users the provider manages over SCIM: their state follows it, so an admin sees where a change came from. */
function scimNote(user: UserOverview): SafeHtml | string {
  if (user.scim_updated_at === null) return '';
  return html`<div class="small"><span class="badge" title="Provisioned over SCIM">SCIM</span> <span class="muted nowrap">changed ${when(user.scim_updated_at)}</span></div>`;
}

/** The admin console: users, keys and the audit log, server-rendered like the account page. */
export function renderAdminPage(model: AdminPageModel): SafeHtml {
  const { admin, users, usage, keys, more, events, filter, eventNames, now, providerOf } = model;
  return html`<header class="top">
      <div>
        <h1>Admin</h1>
        <p class="muted">
          Signed in as <strong>${admin.email ?? admin.subject}</strong> · <a href="/v1/auth/account">your account</a>
        </p>
      </div>
      <a class="button secondary" href="/v1/auth/logout">Sign out</a>
    </header>
    <h2>Users</h2>
    ${
      users.length
        ? html`<div class="scroll">
            <table>
              <thead>
                <tr>
                  <th>User</th>
                  ${providerOf ? html`<th>Provider</th>` : ''}
                  <th>Role</th>
                  <th>First sign-in</th>
                  <th>Last sign-in</th>
                  <th>Keys</th>
                  <th>Sessions</th>
                  <th>Requests (30 d)</th>
                  <th>Tokens (30 d)</th>
                  <th>State</th>
                  <th></th>
                </tr>
              </thead>
              <tbody>
                ${users.map((user) => userRow(user, admin, usage.get(user.id), providerOf))}
              </tbody>
            </table>
          </div>`
        : html`<p class="empty">No users yet.</p>`
    }
    ${more.users ? html`<p><a href="/v1/auth/admin?users_after=${encodeURIComponent(more.users)}">More users</a></p>` : ''}
    <h2>API keys</h2>
    ${
      keys.length
        ? html`<div class="scroll">
            <table>
              <thead>
                <tr>
                  <th>Owner</th>
                  <th>Name</th>
                  <th>Key</th>
                  <th>Created</th>
                  <th>Last used</th>
                  <th>State</th>
                  <th></th>
                </tr>
              </thead>
              <tbody>
                ${keys.map((key) => keyRow(key, now))}
              </tbody>
            </table>
          </div>`
        : html`<p class="empty">No API keys yet.</p>`
    }
    ${more.keys ? html`<p><a href="/v1/auth/admin?keys_after=${encodeURIComponent(more.keys)}">More keys</a></p>` : ''}
    <h2>Audit log</h2>
    <form class="create" method="get" action="/v1/auth/admin">
      <label
        >Event
        <select name="event">
          <option value="">any</option>
          ${eventNames.map(
            (name) => html`<option value="${name}" ${filter.event === name ? html` selected` : ''}>${name}</option>`,
          )}
        </select></label
      >
      <label>Actor email <input type="text" name="actor" value="${filter.actor ?? ''}" /></label>
      <label>Since <input type="text" name="since" value="${filter.since ?? ''}" placeholder="2026-01-31" /></label>
      <button type="submit" class="secondary">Filter</button>
      <a
        class="button secondary"
        href="/v1/auth/admin/audit${exportQuery(filter)}"
        >Export JSON lines</a
      >
    </form>
    ${
      events.length
        ? html`<div class="scroll">
            <table class="audit">
              <thead>
                <tr>
                  <th>Time (UTC)</th>
                  <th>Event</th>
                  <th>Actor</th>
                  <th>Target</th>
                  <th>Address</th>
                  <th>Detail</th>
                </tr>
              </thead>
              <tbody>
                ${events.map(eventRow)}
              </tbody>
            </table>
          </div>`
        : html`<p class="empty">No matching events.</p>`
    }
    <script src="${ACCOUNT_SCRIPT_PATH}"></script>`;
}
