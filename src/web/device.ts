import type { DeviceRequest } from '../device/store.js';
import type { User } from '../users/store.js';
import { html, type SafeHtml } from './html.js';

export const DEVICE_PAGE_PATH = '/v1/auth/device';

/** What each scope lets the program do, in the words of the person approving. */
const SCOPE_WORDS: Record<string, string> = {
  inference: 'run models (chat, completions, embeddings)',
  training: 'train and tune models, upload data',
  read: 'read anything on the platform',
  all: 'everything on the platform',
};

function signedInAs(user: User): SafeHtml {
  return html`<p class="muted">Signed in as <strong>${user.name ?? user.email ?? user.subject}</strong></p>`;
}

/** Where a person types the code a command line showed them. */
export function renderDeviceEntry(model: { user: User; error?: string; userCode?: string }): SafeHtml {
  return html`<h1>Sign in a device</h1>
    ${signedInAs(model.user)}
    ${model.error ? html`<p class="notice error" role="alert">${model.error}</p>` : ''}
    <p>Enter the code your command line or program shows.</p>
    <form class="create" method="get" action="${DEVICE_PAGE_PATH}">
      <label
        >Code
        <input
          type="text"
          name="user_code"
          required
          maxlength="20"
          autocomplete="off"
          autocapitalize="characters"
          spellcheck="false"
          placeholder="BCDF-GHJK"
          value="${model.userCode ?? ''}"
      /></label>
      <button type="submit">Continue</button>
    </form>`;
}

/**
 * What is asking and from where, before the person lets it in. Approve and Deny post back here; the
 * one decision checks the Origin of the post (CSRF), as it does for every form of the gateway.
 */
export function renderDeviceConsent(model: {
  user: User;
  userCode: string;
  request: DeviceRequest;
  keyDays: number;
  now: number;
}): SafeHtml {
  const { user, userCode, request, keyDays, now } = model;
  const minutesLeft = Math.max(1, Math.round((request.expiresAt - now) / 60_000));
  return html`<h1>Allow this device?</h1>
    ${signedInAs(user)}
    <p>A program is asking for an API key of yours. Approve only if you started it yourself, just now.</p>
    <table class="device-request">
      <tbody>
        <tr><th scope="row">Program</th><td><strong>${request.clientId}</strong></td></tr>
        <tr><th scope="row">Computer</th><td>${request.deviceName ?? 'not named'}</td></tr>
        <tr><th scope="row">Address</th><td><code>${request.clientAddress}</code></td></tr>
        <tr><th scope="row">Code</th><td><code>${userCode}</code></td></tr>
        <tr>
          <th scope="row">May</th>
          <td>${request.scopes.map((scope) => html`<div><code>${scope}</code>: ${SCOPE_WORDS[scope] ?? scope}</div>`)}</td>
        </tr>
        <tr><th scope="row">Key lifetime</th><td>${keyDays} days (revoke it any time on your account page)</td></tr>
      </tbody>
    </table>
    <p class="small muted">This request ends in ${minutesLeft} minute${minutesLeft === 1 ? '' : 's'}.</p>
    <div class="device-actions">
      <form class="inline" method="post" action="${DEVICE_PAGE_PATH}">
        <input type="hidden" name="user_code" value="${userCode}" />
        <input type="hidden" name="action" value="approve" />
        <button type="submit">Approve</button>
      </form>
      <form class="inline" method="post" action="${DEVICE_PAGE_PATH}">
        <input type="hidden" name="user_code" value="${userCode}" />
        <input type="hidden" name="action" value="deny" />
        <button type="submit" class="danger">Deny</button>
      </form>
    </div>`;
}

/** The answer once the person decided; the program learns it at its next poll. */
export function renderDeviceDone(model: { approved: boolean; keyName?: string }): SafeHtml {
  return model.approved
    ? html`<h1>Device approved</h1>
        <p class="notice done" role="status">
          The program now has a new API key, <strong>“${model.keyName}”</strong>. You can close this window.
        </p>
        <p><a class="button secondary" href="/v1/auth/account">See your keys</a></p>`
    : html`<h1>Device denied</h1>
        <p class="notice done" role="status">The program was refused and gets no key. You can close this window.</p>`;
}
