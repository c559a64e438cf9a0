/**
 * One gate (issue 12): the gateway's own proxy, forward-auth, the JSON API and the pages ask the same
 * decision, so each rule holds on every surface. Surface × rule, with each finding this branch closes
 * as a named test ("finding N: …"); forward-auth through a real nginx is in nginx-forward-auth.test.ts
 * (scopes, limits, body controls, the failed-auth limit under spoofed X-Forwarded-For), rotating
 * twice in key-controls.test.ts. Every refusal test also checks the platform was never reached.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';
import { expectApiError } from '../support/api-error.js';
import { createKey } from '../support/keys.js';

const ADMIN = { sub: 'boss-1', email: 'boss@example.test' };
const MEMBER = { sub: 'member-1', email: 'member@example.test' };

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

async function read(response: Response): Promise<Answer> {
  return { status: response.status, headers: response.headers, text: await response.text() };
}

async function signedInAs(stack: FaultyStack, who: { sub: string; email: string }): Promise<Browserless> {
  Object.assign(stack.provider, { subject: who.sub, email: who.email });
  const browser = new Browserless();
  await signInForSession(stack, browser);
  return browser;
}

function withKey(stack: FaultyStack, key: string, path: string, init: RequestInit = {}): Promise<Answer> {
  return fetch(`${stack.url}${path}`, {
    ...init,
    redirect: 'manual',
    headers: { ...init.headers, authorization: `Bearer ${key}` },
  }).then(read);
}

/** Asks forward-auth about a request, as a trusted proxy (127.0.0.1 is in gateway.trusted_proxies). */
function check(stack: FaultyStack, key: string, method?: string, uri?: string): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (method) headers['x-forwarded-method'] = method;
  if (uri) headers['x-forwarded-uri'] = uri;
  return withKey(stack, key, '/v1/auth/check', { headers });
}

const platformSaw = (stack: FaultyStack, path: string) =>
  stack.platform.requests.some((request) => request.url.split('?')[0] === path);

describe('one gate: every surface asks the same decision', () => {
  let stack: FaultyStack;
  let admin: Browserless;
  let member: Browserless;
  let memberId: string;

  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: { admin_emails: [ADMIN.email], failed_auth_per_minute: 0, max_keys_per_user: 4 },
      gateway: { trusted_proxies: ['127.0.0.1'] },
    });
    admin = await signedInAs(stack, ADMIN);
    member = await signedInAs(stack, MEMBER);
    const users = JSON.parse((await read(await admin.fetch(`${stack.url}/v1/auth/admin/users`))).text) as {
      data: Array<{ id: string; subject: string }>;
    };
    memberId = users.data.find((user) => user.subject === MEMBER.sub)!.id;
  });
  afterAll(() => stack?.close());

  describe('rule: a key’s scopes (finding 2 and finding 4)', () => {
    it('proxy: refuses a read key a POST to a training path, platform untouched', async () => {
      const reader = await createKey(stack, admin, { scopes: ['read'] });
      const answer = await withKey(stack, reader.key, '/v1/fine_tuning/jobs', { method: 'POST', body: '{}' });
      expect(expectApiError(answer, 403, 'insufficient_scope').error.message).toContain('"training"');
      expect(platformSaw(stack, '/v1/fine_tuning/jobs')).toBe(false);
      await revokeAll(admin);
    });

    it('finding 2: forward-auth refuses a read key for POST /v1/fine_tuning/jobs, allows its GETs', async () => {
      const reader = await createKey(stack, member, { scopes: ['read'] });
      const post = await check(stack, reader.key, 'POST', '/v1/fine_tuning/jobs');
      expect(expectApiError(post, 403, 'insufficient_scope').error.message).toContain('"training"');
      expect((await check(stack, reader.key, 'GET', '/v1/fine_tuning/jobs')).status).toBe(200);
      // A proxy that names no method or path cannot have a scoped key judged: refused, not guessed.
      expectApiError(await check(stack, reader.key), 403, 'target_unknown');
      await revokeAll(member);
    });

    it('finding 4: an admin’s read-scoped key cannot disable a user or list users and keys (JSON API)', async () => {
      for (const scopes of [['read'], ['all'], ['keys']]) {
        const key = await createKey(stack, admin, { scopes });
        const disable = await withKey(stack, key.key, `/v1/auth/admin/users/${memberId}/disable`, { method: 'POST' });
        expect(expectApiError(disable, 403, 'insufficient_scope').error.message, scopes.join()).toContain('"admin"');
        expectApiError(await withKey(stack, key.key, '/v1/auth/admin/users'), 403, 'insufficient_scope');
        expectApiError(await withKey(stack, key.key, '/v1/auth/admin/keys'), 403, 'insufficient_scope');
        expectApiError(await withKey(stack, key.key, '/v1/auth/admin/audit'), 403, 'insufficient_scope');
      }
      // The member was never disabled: their session still works.
      expect((await member.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
      await revokeAll(admin);
    });

    it('finding 4: the admin page refuses a key without the admin scope, and the account page one without keys (pages)', async () => {
      const platformKey = await createKey(stack, admin, {});
      expectApiError(await withKey(stack, platformKey.key, '/v1/auth/admin'), 403, 'insufficient_scope');
      expectApiError(await withKey(stack, platformKey.key, '/v1/auth/account'), 403, 'insufficient_scope');
      const form = await withKey(stack, platformKey.key, '/v1/auth/account/keys', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'name=child&form_token=t',
      });
      expectApiError(form, 403, 'insufficient_scope');
      expect((await read(await admin.fetch(`${stack.url}/v1/auth/admin`))).status).toBe(200);
      expect((await read(await admin.fetch(`${stack.url}/v1/auth/account`))).status).toBe(200);
      await revokeAll(admin);
    });

    it('finding 4: an admin-scoped key administers while its owner is an admin; a member cannot make one', async () => {
      const adminKey = await createKey(stack, admin, { scopes: ['admin'] });
      expect((await withKey(stack, adminKey.key, '/v1/auth/admin/users')).status).toBe(200);
      expectApiError(await withKey(stack, adminKey.key, '/v1/models'), 403, 'insufficient_scope');
      const refused = await read(
        await member.fetch(`${stack.url}/v1/auth/api-keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin: stack.url },
          body: JSON.stringify({ name: 'wannabe', scopes: ['admin'] }),
        }),
      );
      expectApiError(refused, 403, 'admin_scope_requires_admin');
      await revokeAll(admin);
    });
  });

  describe('rule: request limits and what forward-auth cannot see (finding 2)', () => {
    it('finding 2: forward-auth counts a 1 request/min key: the second check is 429 with Retry-After', async () => {
      const once = await createKey(stack, member, { requests_per_minute: 1 });
      expect((await check(stack, once.key, 'GET', '/v1/models')).status).toBe(200);
      const second = await check(stack, once.key, 'GET', '/v1/models');
      expectApiError(second, 429, 'rate_limit_exceeded');
      expect(Number(second.headers.get('retry-after'))).toBeGreaterThan(0);
      await revokeAll(member);
    });

    it('finding 2: forward-auth refuses a model-limited or token-limited key with 403 naming the reason', async () => {
      const modelLimited = await createKey(stack, member, { models: ['demo-small'], requests_per_minute: 1 });
      for (let attempt = 0; attempt < 3; attempt++) {
        const answer = await check(stack, modelLimited.key, 'POST', '/v1/chat/completions');
        expect(expectApiError(answer, 403, 'body_controls_unenforceable').error.message).toContain('model allow-list');
      }
      const tokenLimited = await createKey(stack, member, { tokens_per_minute: 1_500 });
      const answer = await check(stack, tokenLimited.key, 'POST', '/v1/chat/completions');
      expect(expectApiError(answer, 403, 'body_controls_unenforceable').error.message).toContain('token limit');
      // The gateway's own proxy sees the body, so the same key works there.
      const proxied = await withKey(stack, modelLimited.key, '/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'demo-small', messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(proxied.status, proxied.text).toBe(200);
      await revokeAll(member);
    });
  });

  describe('rule: bounded lists (finding 8, finding 9)', () => {
    beforeEach(() => revokeAll(member));

    it('finding 8: refuses a key past auth.max_keys_per_user with 409, by JSON and by the account form', async () => {
      // Sent all at once: the cap must hold under parallel requests, not only one after another.
      const attempts = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          member
            .fetch(`${stack.url}/v1/auth/api-keys`, {
              method: 'POST',
              headers: { 'content-type': 'application/json', origin: stack.url },
              body: JSON.stringify({ name: `parallel ${i}` }),
            })
            .then(read),
        ),
      );
      expect(attempts.map((answer) => answer.status).sort()).toEqual([...Array(4).fill(201), ...Array(6).fill(409)]);
      const json = await read(
        await member.fetch(`${stack.url}/v1/auth/api-keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin: stack.url },
          body: JSON.stringify({ name: 'one too many' }),
        }),
      );
      expect(expectApiError(json, 409, 'too_many_api_keys').error.message).toContain('revoke one');
      const form = await read(
        await member.fetch(`${stack.url}/v1/auth/account/keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', origin: stack.url },
          body: 'name=form+too+many&form_token=cap-test',
        }),
      );
      expect(form.status).toBe(409);
      expect(form.text).toContain('revoke one');
    });

    it('finding 8: pages the key list (limit ≤ 100, after = last_id) and refuses a limit past 999', async () => {
      const made = [];
      for (let i = 0; i < 3; i++) made.push(await createKey(stack, member, { name: `page${i}` }));
      const first = JSON.parse((await read(await member.fetch(`${stack.url}/v1/auth/api-keys?limit=2`))).text) as {
        data: Array<{ id: string }>;
        has_more: boolean;
        last_id: string;
      };
      expect(first.data).toHaveLength(2);
      expect(first.has_more).toBe(true);
      const next = JSON.parse(
        (await read(await member.fetch(`${stack.url}/v1/auth/api-keys?limit=2&after=${first.last_id}`))).text,
      ) as { data: Array<{ id: string }> };
      const seen = [...first.data, ...next.data].map((key) => key.id);
      for (const key of made) expect(seen).toContain(key.id);
      expect(new Set(seen).size).toBe(seen.length);
      expect((await member.fetch(`${stack.url}/v1/auth/api-keys?limit=1000`)).status).toBe(400);
      const adminPage = JSON.parse((await read(await admin.fetch(`${stack.url}/v1/auth/admin/keys?limit=1`))).text) as {
        data: unknown[];
        has_more: boolean;
      };
      expect(adminPage.data).toHaveLength(1);
      expect(adminPage.has_more).toBe(true);
    });

    it('finding 9: answers repeated admin filters with 400, never 500', async () => {
      for (const path of [
        '/v1/auth/admin?actor=a&actor=b',
        '/v1/auth/admin?event=sign_in&event=key_created',
        '/v1/auth/admin/audit?since=1&since=2',
        '/v1/auth/admin/users?limit=1&limit=2',
        '/v1/auth/admin/keys?after=a&after=b',
      ]) {
        const answer = await read(await admin.fetch(`${stack.url}${path}`));
        expect(answer.status, `${path}: ${answer.text}`).toBe(400);
      }
    });
  });

  /** Revokes every live key of this browser's user, so each test starts under the per-user cap. */
  async function revokeAll(browser: Browserless): Promise<void> {
    const list = JSON.parse((await read(await browser.fetch(`${stack.url}/v1/auth/api-keys`))).text) as {
      data: Array<{ id: string; revoked_at: string | null }>;
    };
    for (const key of list.data.filter((listed) => listed.revoked_at === null)) {
      const answer = await browser.fetch(`${stack.url}/v1/auth/api-keys/${key.id}`, {
        method: 'DELETE',
        headers: { origin: stack.url },
      });
      expect(answer.status).toBe(204);
    }
  }
});

describe('forward-auth with gateway.forward_auth_skip_body_controls: true', () => {
  let stack: FaultyStack;
  let owner: Browserless;
  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: { failed_auth_per_minute: 0 },
      gateway: { trusted_proxies: ['127.0.0.1'], forward_auth_skip_body_controls: true },
    });
    owner = await signedInAs(stack, MEMBER);
  });
  afterAll(() => stack?.close());

  it('lets a model-limited key through the check, and still counts its request limit', async () => {
    const limited = await createKey(stack, owner, { models: ['demo-small'], requests_per_minute: 1 });
    expect((await check(stack, limited.key, 'POST', '/v1/chat/completions')).status).toBe(200);
    expectApiError(await check(stack, limited.key, 'POST', '/v1/chat/completions'), 429, 'rate_limit_exceeded');
  });
});

/**
 * finding 9 (the session half): the sign-in rules are applied again at every refresh, and the
 * refresh is due at least every auth.recheck_minutes, whatever the ID token's lifetime.
 */
describe('sign-in rules rechecked at refresh', () => {
  const SHORT_TTL_SECONDS = 2;
  const LONG_TTL_SECONDS = 300;
  let stack: FaultyStack;
  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: { allowed_groups: ['llm-users'], admin_groups: ['llm-admins'], recheck_minutes: 1 },
    });
  });
  afterAll(() => stack?.close());
  beforeEach(() => {
    Object.assign(stack.provider, {
      subject: ADMIN.sub,
      email: ADMIN.email,
      issueRefreshTokens: true,
      idTokenLifetimeSeconds: SHORT_TTL_SECONDS,
      extraClaims: { groups: ['llm-users', 'llm-admins'] },
      refreshClaims: {},
    });
  });

  it('finding 9: a session loses the admin role at the refresh after the user leaves the admin group, and so do their admin keys', async () => {
    const browser = new Browserless();
    await signInForSession(stack, browser);
    expect((await browser.fetch(`${stack.url}/v1/auth/admin/users`)).status).toBe(200);
    const adminKey = await createKey(stack, browser, { scopes: ['admin'] });
    expect((await withKey(stack, adminKey.key, '/v1/auth/admin/users')).status).toBe(200);

    Object.assign(stack.provider, {
      refreshClaims: { groups: ['llm-users'] },
      idTokenLifetimeSeconds: LONG_TTL_SECONDS,
    });
    const refreshes = stack.provider.refreshRequests;
    // This request finds the ID token about to expire and refreshes; the next one sees the new role.
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
    expect(stack.provider.refreshRequests).toBe(refreshes + 1);
    expectApiError(await read(await browser.fetch(`${stack.url}/v1/auth/admin/users`)), 403, 'admin_required');
    expectApiError(await withKey(stack, adminKey.key, '/v1/auth/admin/users'), 403, 'admin_required');
    // Still a member: the session itself lives on.
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
  });

  it('finding 9: a session ends at the refresh after the user leaves every allowed group', async () => {
    const browser = new Browserless();
    await signInForSession(stack, browser);
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
    Object.assign(stack.provider, { refreshClaims: { groups: [] } });
    const refused = await read(await browser.fetch(`${stack.url}/v1/auth/me`));
    expect(refused.status).toBe(401);
  });

  it('schedules the first recheck within auth.recheck_minutes of sign-in, though the ID token lives longer', async () => {
    stack.provider.idTokenLifetimeSeconds = LONG_TTL_SECONDS;
    const browser = new Browserless();
    const signedInAt = Date.now();
    await signInForSession(stack, browser);
    const refreshes = stack.provider.refreshRequests;
    // 1 minute of recheck is inside the 60 s refresh-ahead window: the very next request refreshes,
    // where a 300 s ID token alone would wait four minutes.
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
    expect(stack.provider.refreshRequests, `signed in ${Date.now() - signedInAt} ms ago`).toBe(refreshes + 1);
  });
});
