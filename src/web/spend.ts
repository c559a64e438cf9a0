import type { SpendReport } from '../budgets/spend.js';
import { html, type SafeHtml } from './html.js';

const SHOWN = 20;

function spend(micros: number, currency: string): string {
  return `${(micros / 1_000_000).toFixed(2)} ${currency}`;
}

/**
 * The admin console's budgets section: the top users and groups by spend, their CSV exports, and
 * a form to set or clear one user's budget override.
 */
export function renderSpendSection(report: SpendReport, currency: string): SafeHtml {
  const users = report.users.slice(0, SHOWN);
  const groups = report.groups.slice(0, SHOWN);
  return html`<h2>Spend, last ${report.days} days</h2>
    <p>
      <a class="button secondary" href="/v1/auth/admin/spend/users.csv" download>Users (CSV)</a>
      <a class="button secondary" href="/v1/auth/admin/spend/groups.csv" download>Groups (CSV)</a>
    </p>
    ${
      users.length
        ? html`<div class="scroll"><table class="spend">
            <thead><tr><th>User</th><th>Groups</th><th>Requests</th><th>Tokens</th><th>Spend</th></tr></thead>
            <tbody>
              ${users.map(
                (user) => html`<tr data-spend-user="${user.user_id}">
                  <td>${user.email ?? user.user_id}</td>
                  <td>${user.groups.join(', ')}</td>
                  <td>${user.requests}</td>
                  <td>${user.tokens}</td>
                  <td>${spend(user.cost_micros, currency)}</td>
                </tr>`,
              )}
            </tbody>
          </table></div>`
        : html`<p class="empty">No usage yet.</p>`
    }
    ${
      groups.length
        ? html`<div class="scroll"><table class="spend">
            <thead><tr><th>Group</th><th>Users</th><th>Requests</th><th>Tokens</th><th>Spend</th></tr></thead>
            <tbody>
              ${groups.map(
                (group) => html`<tr data-spend-group="${group.group}">
                  <td>${group.group}</td>
                  <td>${group.users}</td>
                  <td>${group.requests}</td>
                  <td>${group.tokens}</td>
                  <td>${spend(group.cost_micros, currency)}</td>
                </tr>`,
              )}
            </tbody>
          </table></div>`
        : ''
    }
    <h3>A user's budget</h3>
    <form class="create" method="post" action="/v1/auth/admin/budgets">
      <label>User (email or id) <input type="text" name="user" required maxlength="320" /></label>
      <label>Tokens <input type="number" name="tokens" min="1" placeholder="none" /></label>
      <label>Spend (${currency}) <input type="number" name="spend" min="0.01" step="0.01" placeholder="none" /></label>
      <label>Per
        <select name="period"><option value="month">month</option><option value="week">week</option><option value="day">day</option></select></label>
      <button type="submit">Set (both empty: back to the configured budget)</button>
    </form>`;
}
