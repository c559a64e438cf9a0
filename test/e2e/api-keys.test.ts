import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/keys/format.js';
import { hashApiKey } from '../../src/keys/hash-secret.js';
import { TEST_TOKEN_WARNING } from '../../src/server.js';
import { Browserless } from '../support/browserless.js';
import { signInForSession } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';
import { expectApiError, type ApiErrorBody } from '../support/api-error.js';
import { createKey, listKeys, type CreatedKey, type ListedKey } from '../support/keys.js';
import { rawStatus } from '../support/raw-http.js';

/** Who the faulty provider signs in (its defaults). */
const OWNER = { sub: 'test-user-1', email: 'ada@example.test' };
const TEST_TOKEN = 'static-test-token-for-the-e2e-suite';
const TEST_TOKEN_EMAIL = 'robot@example.test';
const KEY_SHAPE = /^gth_[0-9A-Za-z]{36}$/;

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** Every key any test was given, so the last tests can prove none reached the log. */
const issued: string[] = [];
const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-keys-'));
  tempDirs.push(dir);
  return dir;
}

/** A gateway whose generated secrets land in a fresh directory, not the working tree. */
async function startKeyStack(auth: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  const dataDir = tempDir();
  const stack = await startFaultyStack({ ...extra, auth, gateway: { data_dir: dataDir } });
  return Object.assign(stack, { dataDir });
}

type KeyStack = FaultyStack & { dataDir: string };

/** A browser signed in as OWNER. */
async function signedInBrowser(stack: KeyStack): Promise<Browserless> {
  const browser = new Browserless();
  await signInForSession(stack, browser);
  return browser;
}

function jsonPost(stack: KeyStack, body: unknown, headers: Record<string, string> = {}): RequestInit {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: stack.url, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  };
}

/** Creates a key and remembers its secret: every test checks that none appears where it must not. */
async function issueKey(stack: KeyStack, browser: Browserless, body?: Record<string, unknown>): Promise<CreatedKey> {
  const created = await createKey(stack, browser, body);
  issued.push(created.key);
  return created;
}

/** A key with the "keys" scope, of a second user (signed in as such), for isolation tests. */
async function otherUsersKeysKey(stack: KeyStack): Promise<CreatedKey> {
  const { subject, email } = stack.provider;
  Object.assign(stack.provider, { subject: 'test-user-2', email: 'bob@example.test' });
  try {
    const other = await signedInBrowser(stack);
    return await issueKey(stack, other, { name: 'other manager', scopes: ['keys'] });
  } finally {
    Object.assign(stack.provider, { subject, email });
  }
}

function withKey(stack: KeyStack, key: string, path = '/echo/check', init: RequestInit = {}): Promise<Response> {
  return fetch(`${stack.url}${path}`, { ...init, headers: { ...init.headers, authorization: `Bearer ${key}` } });
}

/** The random part and checksum: what must never show up anywhere but in the create response. */
function secretPartOf(key: string): string {
  return key.slice(key.indexOf('_') + 1);
}

function rawGet(url: string, path: string, headerLines: Buffer[]): Promise<number> {
  const host = new URL(url).host;
  return rawStatus(
    url,
    Buffer.concat([
      Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n`, 'latin1'),
      ...headerLines.flatMap((line) => [line, Buffer.from('\r\n')]),
      Buffer.from('\r\n'),
    ]),
  );
}

describe('API keys on a gateway with default settings', () => {
  let stack: KeyStack;
  let owner: Browserless;
  beforeAll(async () => {
    // The failure limit is off here so the refusal tests below cannot lock the valid-key tests out.
    stack = await startKeyStack({
      failed_auth_per_minute: 0,
      test_token: TEST_TOKEN,
      test_token_email: TEST_TOKEN_EMAIL,
    });
    owner = await signedInBrowser(stack);
  });
  afterAll(() => stack.close());

  describe('the JSON API at /v1/auth/api-keys', () => {
    it('creates a key and returns its secret once, with no-store', async () => {
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys`, jsonPost(stack, { name: 'notebook' }));
      expect(response.status).toBe(201);
      expect(response.headers.get('cache-control')).toBe('no-store');
      const created = (await response.json()) as CreatedKey;
      issued.push(created.key);
      expect(created).toEqual({
        id: expect.any(String),
        key: expect.stringMatching(KEY_SHAPE),
        name: 'notebook',
        created_at: expect.any(String),
        expires_at: null,
        scopes: ['all'],
        models: null,
        requests_per_minute: null,
        tokens_per_minute: null,
      });
      expect(Math.abs(Date.parse(created.created_at) - Date.now())).toBeLessThan(10_000);
    });

    it('lists the caller’s keys with a stub and never the secret', async () => {
      const created = await issueKey(stack, owner, { name: 'listed' });
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys`);
      expect(response.status).toBe(200);
      expect(response.headers.get('cache-control')).toBe('no-store');
      const text = await response.text();
      const body = JSON.parse(text) as { object: string; data: ListedKey[] };
      expect(body.object).toBe('list');
      const entry = body.data.find((key) => key.id === created.id);
      expect(entry).toEqual({
        id: created.id,
        name: 'listed',
        stub: `gth_…${created.key.slice(-4)}`,
        created_at: created.created_at,
        expires_at: null,
        last_used_at: null,
        revoked_at: null,
        scopes: ['all'],
        models: null,
        requests_per_minute: null,
        tokens_per_minute: null,
      });
      for (const key of issued) expect(text).not.toContain(secretPartOf(key));
    });

    it('sets expires_at from expires_in_days', async () => {
      const before = Date.now();
      const created = await issueKey(stack, owner, { name: 'week', expires_in_days: 7 });
      const expiresAt = Date.parse(created.expires_at!);
      expect(expiresAt).toBeGreaterThanOrEqual(before + 7 * 86_400_000);
      expect(expiresAt).toBeLessThanOrEqual(Date.now() + 7 * 86_400_000);
    });

    it('trims the name', async () => {
      expect((await issueKey(stack, owner, { name: '  padded  ' })).name).toBe('padded');
    });

    const badBodies: Array<[string, string, code?: string]> = [
      ['no name', JSON.stringify({})],
      ['an empty name', JSON.stringify({ name: '' })],
      ['a blank name', JSON.stringify({ name: '   ' })],
      ['a name of 101 characters', JSON.stringify({ name: 'n'.repeat(101) })],
      ['zero days', JSON.stringify({ name: 'x', expires_in_days: 0 })],
      ['negative days', JSON.stringify({ name: 'x', expires_in_days: -1 })],
      ['fractional days', JSON.stringify({ name: 'x', expires_in_days: 1.5 })],
      ['days beyond a century', JSON.stringify({ name: 'x', expires_in_days: 36_501 })],
      ['null days', JSON.stringify({ name: 'x', expires_in_days: null })],
      ['a list instead of an object', JSON.stringify([{ name: 'x' }])],
      ['invalid JSON', '{"name": "x",', 'fst_err_ctp_invalid_json_body'],
      ['an empty body', '', 'fst_err_ctp_empty_json_body'],
    ];
    it.each(badBodies)('refuses a body with %s: 400 in OpenAI’s error shape', async (_label, body, code) => {
      const before = (await listKeys(stack, owner)).length;
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys`, jsonPost(stack, body));
      await expectApiError(response, 400, code ?? 'fst_err_validation');
      expect((await listKeys(stack, owner)).length).toBe(before);
    });

    // Fastify's default Ajv options coerce types and drop unknown properties; a typo such as
    // "expires_in" would silently create a key that never expires.
    const looseBodies: Array<[string, Record<string, unknown>]> = [
      ['days as a string', { name: 'x', expires_in_days: '30' }],
      ['days as a boolean', { name: 'x', expires_in_days: true }],
      ['a name that is a number', { name: 12345 }],
      ['an unknown property (a misspelt expiry)', { name: 'x', expires_in: 30 }],
    ];
    it.each(looseBodies)('refuses a body with %s instead of coercing or ignoring it', async (_label, body) => {
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys`, jsonPost(stack, body));
      if (response.status === 201) issued.push(((await response.clone().json()) as CreatedKey).key);
      await expectApiError(response, 400, 'fst_err_validation');
    });

    it('revokes with DELETE: 204, listed as revoked, refused at once as revoked', async () => {
      const created = await issueKey(stack, owner, { name: 'to revoke' });
      expect((await withKey(stack, created.key)).status).toBe(200);
      const deleted = await owner.fetch(`${stack.url}/v1/auth/api-keys/${created.id}`, {
        method: 'DELETE',
        headers: { origin: stack.url },
      });
      expect(deleted.status).toBe(204);
      const listed = (await listKeys(stack, owner)).find((key) => key.id === created.id)!;
      expect(Date.parse(listed.revoked_at!)).toBeGreaterThan(Date.now() - 10_000);
      const text = JSON.stringify(await expectApiError(await withKey(stack, created.key), 401, 'revoked_api_key'));
      expect(JSON.parse(text).error.message).toMatch(/revoked/i);
      expect(text).not.toContain(secretPartOf(created.key));
    });

    it('answers 404 for a key id that does not exist', async () => {
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys/key_doesnotexist`, {
        method: 'DELETE',
        headers: { origin: stack.url },
      });
      await expectApiError(response, 404, 'api_key_not_found');
    });

    it('hides other people’s keys: not listed, 404 on DELETE, and the key keeps working', async () => {
      const created = await issueKey(stack, owner, { name: 'owner only' });
      const other = await otherUsersKeysKey(stack);
      const otherList = await withKey(stack, other.key, '/v1/auth/api-keys');
      expect(otherList.status).toBe(200);
      expect(((await otherList.json()) as { data: ListedKey[] }).data.map((key) => key.id)).toEqual([other.id]);
      const deleted = await withKey(stack, other.key, `/v1/auth/api-keys/${created.id}`, { method: 'DELETE' });
      await expectApiError(deleted, 404, 'api_key_not_found');
      const formRevoke = await withKey(stack, other.key, `/v1/auth/account/keys/${created.id}/revoke`, {
        method: 'POST',
        redirect: 'manual',
      });
      expect(formRevoke.status).toBe(303);
      expect((await withKey(stack, created.key)).status).toBe(200);
      expect((await listKeys(stack, owner)).find((key) => key.id === created.id)!.revoked_at).toBeNull();
    });

    it('answers 401 in OpenAI’s shape to a caller with no credentials', async () => {
      await expectApiError(await fetch(`${stack.url}/v1/auth/api-keys`), 401, 'missing_credentials');
      await expectApiError(
        await fetch(`${stack.url}/v1/auth/api-keys`, jsonPost(stack, { name: 'x' })),
        401,
        'missing_credentials',
      );
    });
  });

  describe('cross-site requests carried by the session cookie', () => {
    const crossSite: Array<[string, Record<string, string>]> = [
      ['no Origin', {}],
      ['a foreign Origin', { origin: 'https://evil.example' }],
      ['the same host on another port', { origin: 'http://127.0.0.1:1' }],
      ['Origin: null', { origin: 'null' }],
      ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ];

    it.each(crossSite)('refuses to create a key with %s (403)', async (_label, headers) => {
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ name: 'csrf' }),
      });
      await expectApiError(response, 403, 'cross_origin_request');
      expect((await listKeys(stack, owner)).some((key) => key.name === 'csrf')).toBe(false);
    });

    it.each(crossSite)('refuses to revoke a key with %s (403), and the key keeps working', async (_label, headers) => {
      const created = await issueKey(stack, owner, { name: 'kept' });
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys/${created.id}`, { method: 'DELETE', headers });
      await expectApiError(response, 403, 'cross_origin_request');
      const formRevoke = await owner.fetch(`${stack.url}/v1/auth/account/keys/${created.id}/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: '',
      });
      expect(formRevoke.status).toBe(403);
      expect((await withKey(stack, created.key)).status).toBe(200);
    });

    it('refuses the account form’s create from another origin', async () => {
      const response = await owner.fetch(`${stack.url}/v1/auth/account/keys`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' },
        body: 'name=csrf-form',
      });
      expect(response.status).toBe(403);
      expect((await listKeys(stack, owner)).some((key) => key.name === 'csrf-form')).toBe(false);
    });

    it('lets a same-origin request through by Sec-Fetch-Site when the browser sent no Origin', async () => {
      const response = await owner.fetch(`${stack.url}/v1/auth/api-keys`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'sec-fetch-site': 'same-origin' },
        body: JSON.stringify({ name: 'fetch-metadata' }),
      });
      expect(response.status).toBe(201);
      issued.push(((await response.json()) as CreatedKey).key);
    });
  });

  describe('a request authenticated by an API key', () => {
    it('without the "keys" scope may not create keys, by JSON or by form, even with our Origin and a session cookie', async () => {
      const created = await issueKey(stack, owner, { name: 'no children' });
      const before = (await listKeys(stack, owner)).length;
      const json = await owner.fetch(
        `${stack.url}/v1/auth/api-keys`,
        jsonPost(stack, { name: 'child' }, { authorization: `Bearer ${created.key}` }),
      );
      const text = JSON.stringify(await expectApiError(json, 403, 'insufficient_scope'));
      expect((JSON.parse(text) as ApiErrorBody).error.message).toContain('"keys" scope');
      expect(text).not.toContain(secretPartOf(created.key));
      const form = await withKey(stack, created.key, '/v1/auth/account/keys', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: stack.url },
        body: 'name=child',
      });
      expect(form.status).toBe(403);
      expect((await listKeys(stack, owner)).length).toBe(before);
    });

    it('without the "keys" scope may not list, rotate or delete its owner’s keys', async () => {
      const created = await issueKey(stack, owner, { name: 'platform only' });
      await expectApiError(await withKey(stack, created.key, '/v1/auth/api-keys'), 403, 'insufficient_scope');
      const rotate = await withKey(stack, created.key, `/v1/auth/api-keys/${created.id}/rotate`, jsonPost(stack, {}));
      await expectApiError(rotate, 403, 'insufficient_scope');
      const deleted = await withKey(stack, created.key, `/v1/auth/api-keys/${created.id}`, { method: 'DELETE' });
      await expectApiError(deleted, 403, 'insufficient_scope');
      expect((await withKey(stack, created.key)).status).toBe(200);
    });

    it('with the "keys" scope may list its owner’s keys, without secrets', async () => {
      const created = await issueKey(stack, owner, { name: 'lister', scopes: ['keys'] });
      const response = await withKey(stack, created.key, '/v1/auth/api-keys');
      expect(response.status).toBe(200);
      const text = await response.text();
      expect((JSON.parse(text) as { data: ListedKey[] }).data.map((key) => key.id)).toContain(created.id);
      for (const key of issued) expect(text).not.toContain(secretPartOf(key));
      // "keys" opens the gateway's key API only, never the platform.
      await expectApiError(await withKey(stack, created.key), 403, 'insufficient_scope');
    });

    it('with the "keys" scope may create only keys no wider than itself', async () => {
      const manager = await issueKey(stack, owner, { name: 'manager', scopes: ['keys', 'inference'], models: ['m1'] });
      const create = (body: Record<string, unknown>) =>
        withKey(stack, manager.key, '/v1/auth/api-keys', jsonPost(stack, { name: 'child', ...body }));
      await expectApiError(await create({ scopes: ['all'], models: ['m1'] }), 403, 'scope_not_held');
      await expectApiError(await create({ scopes: ['inference'] }), 403, 'models_not_held');
      await expectApiError(
        await create({ scopes: ['keys', 'admin'], models: ['m1'] }),
        403,
        'admin_scope_requires_admin',
      );
      const child = await create({ scopes: ['inference'], models: ['m1'] });
      expect(child.status).toBe(201);
      issued.push(((await child.json()) as CreatedKey).key);
      // Rotating shows a new secret with the rotated key's controls: a wider key cannot be rotated into view.
      const wide = await issueKey(stack, owner, { name: 'wide' });
      const rotate = await withKey(stack, manager.key, `/v1/auth/api-keys/${wide.id}/rotate`, jsonPost(stack, {}));
      await expectApiError(rotate, 403, 'scope_not_held');
    });

    it('is answered by /v1/auth/me as the key’s owner', async () => {
      const created = await issueKey(stack, owner, { name: 'whoami' });
      const response = await withKey(stack, created.key, '/v1/auth/me');
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ sub: OWNER.sub, email: OWNER.email, name: expect.any(String) });
    });
  });

  describe('the account page', () => {
    it('lists the keys under a strict Content-Security-Policy without unsafe-inline', async () => {
      const created = await issueKey(stack, owner, { name: 'shown on the page' });
      const response = await owner.fetch(`${stack.url}/v1/auth/account`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/html/);
      const csp = response.headers.get('content-security-policy')!;
      expect(csp).toMatch(/default-src 'none'/);
      expect(csp).toMatch(/script-src 'self'(;|$)/);
      expect(csp).toMatch(/frame-ancestors 'none'/);
      expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
      expect(response.headers.get('cache-control')).toBe('no-store');
      const page = await response.text();
      expect(page).toContain('shown on the page');
      expect(page).toContain(`gth_…${created.key.slice(-4)}`);
      expect(page).toContain(`data-key-id="${created.id}"`);
      expect(page).not.toMatch(/<script(?![^>]*\ssrc=)[^>]*>/);
      expect(page).not.toMatch(/<[^>]+\son[a-z]+=/i);
      for (const key of issued) expect(page).not.toContain(secretPartOf(key));
    });

    it('sends a browser that is not signed in to sign in and back', async () => {
      const response = await fetch(`${stack.url}/v1/auth/account`, {
        headers: { accept: 'text/html' },
        redirect: 'manual',
      });
      expect(response.status).toBe(302);
      expect(response.headers.get('location')).toBe(
        `/v1/auth/login?return_to=${encodeURIComponent('/v1/auth/account')}`,
      );
    });

    it('creates a key from the form, shows its secret that once, and the key works', async () => {
      const response = await owner.fetch(`${stack.url}/v1/auth/account/keys`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: stack.url },
        body: new URLSearchParams({
          name: 'from the form',
          expires_in_days: '3',
          form_token: 'token-from-the-form',
        }).toString(),
      });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-security-policy')).not.toMatch(/unsafe-inline/);
      expect(response.headers.get('cache-control')).toBe('no-store');
      const page = await response.text();
      const key = /id="new-key-value"[^>]*value="([^"]+)"/.exec(page)?.[1];
      expect(key).toMatch(KEY_SHAPE);
      issued.push(key!);
      expect((await withKey(stack, key!)).status).toBe(200);
      const listed = (await listKeys(stack, owner)).find((entry) => entry.name === 'from the form')!;
      expect(Date.parse(listed.expires_at!) - Date.parse(listed.created_at)).toBe(3 * 86_400_000);
      const again = await (await owner.fetch(`${stack.url}/v1/auth/account`)).text();
      expect(again).toContain('from the form');
      expect(again).not.toContain(secretPartOf(key!));
    });

    it('creates nothing when the same form is posted again (a reload of the page that showed the key)', async () => {
      const post = () =>
        owner.fetch(`${stack.url}/v1/auth/account/keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', origin: stack.url },
          body: new URLSearchParams({ name: 'reloaded', form_token: 'token-reloaded' }).toString(),
        });
      expect((await post()).status).toBe(200);
      const second = await post();
      expect(await second.text()).toContain('was already created');
      expect((await listKeys(stack, owner)).filter((entry) => entry.name === 'reloaded')).toHaveLength(1);
    });

    it('escapes a key name that contains markup', async () => {
      const name = '<img src=x onerror=alert(1)>"\'&';
      await issueKey(stack, owner, { name });
      const page = await (await owner.fetch(`${stack.url}/v1/auth/account`)).text();
      expect(page).not.toContain('<img src=x');
      expect(page).toContain('&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;');
      expect(page).not.toContain('"\'&');
    });

    const badForms: Array<[string, Record<string, string>]> = [
      ['an empty name', { name: '' }],
      ['a name of 101 characters', { name: 'n'.repeat(101) }],
      ['zero days', { name: 'x', expires_in_days: '0' }],
      ['days that are not a number', { name: 'x', expires_in_days: 'soon' }],
    ];
    it.each(badForms)('shows the form again with an error for %s (400)', async (_label, fields) => {
      const before = (await listKeys(stack, owner)).length;
      const response = await owner.fetch(`${stack.url}/v1/auth/account/keys`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: stack.url },
        body: new URLSearchParams({ ...fields, form_token: `bad-form-${_label}` }).toString(),
      });
      expect(response.status).toBe(400);
      expect(await response.text()).toContain('role="alert"');
      expect((await listKeys(stack, owner)).length).toBe(before);
    });

    it('revokes from the form with a 303 back to the page, and the key stops working at once', async () => {
      const created = await issueKey(stack, owner, { name: 'form revoke' });
      expect((await withKey(stack, created.key)).status).toBe(200);
      const response = await owner.fetch(`${stack.url}/v1/auth/account/keys/${created.id}/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: stack.url },
        body: '',
      });
      expect(response.status).toBe(303);
      expect(response.headers.get('location')).toBe('/v1/auth/account?done=revoked');
      await expectApiError(await withKey(stack, created.key), 401, 'revoked_api_key');
      const page = await (await owner.fetch(`${stack.url}/v1/auth/account`)).text();
      const row = new RegExp(`<tr data-key-id="${created.id}">[\\s\\S]*?</tr>`).exec(page)![0];
      expect(row).toContain('revoked');
      // Nothing left to do with it but take it off the list.
      expect(row.match(/<form[^>]*action="([^"]*)"/g)).toEqual([
        expect.stringContaining(`action="/v1/auth/account/keys/${created.id}/remove"`),
      ]);
    });
  });

  describe('using a key', () => {
    it('forwards as the owner with the key id, and the platform never sees the key', async () => {
      const created = await issueKey(stack, owner, { name: 'forwarded' });
      const response = await withKey(stack, created.key, '/echo/identity?x=1', {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-forwarded-user': 'mallory',
          'x-forwarded-email': 'mallory@evil.example',
          'x-forwarded-key-id': 'key_forged',
        },
        body: JSON.stringify({ prompt: 'hello' }),
      });
      expect(response.status).toBe(200);
      const text = await response.text();
      const echo = JSON.parse(text) as Echo;
      expect(echo.headers['x-forwarded-user']).toBe(OWNER.sub);
      expect(echo.headers['x-forwarded-email']).toBe(OWNER.email);
      expect(echo.headers['x-forwarded-key-id']).toBe(created.id);
      expect(echo.headers.authorization).toBeUndefined();
      expect(echo.body).toBe('{"prompt":"hello"}');
      expect(text).not.toContain(secretPartOf(created.key));
      const recorded = stack.platform.requests.at(-1)!;
      expect(recorded.url).toBe('/echo/identity?x=1');
      for (const [name, value] of Object.entries(recorded.headers)) {
        expect(String(value), name).not.toContain(secretPartOf(created.key));
      }
    });

    it('works on every proxied path and method, without an Origin (keys are not ambient credentials)', async () => {
      const created = await issueKey(stack, owner, { name: 'paths' });
      const models = await withKey(stack, created.key, '/v1/models');
      expect(models.status).toBe(200);
      expect(((await models.json()) as { object: string }).object).toBe('list');
      const chat = await withKey(stack, created.key, '/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'demo-small', messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(chat.status).toBe(200);
      for (const method of ['PUT', 'PATCH', 'DELETE']) {
        const response = await withKey(stack, created.key, '/echo/method', { method });
        expect(response.status).toBe(200);
        expect(((await response.json()) as Echo).method).toBe(method);
      }
    });

    it('accepts the Bearer scheme in any case (RFC 9110 11.1)', async () => {
      const created = await issueKey(stack, owner, { name: 'case' });
      const response = await fetch(`${stack.url}/echo/case`, { headers: { authorization: `bearer ${created.key}` } });
      expect(response.status).toBe(200);
    });

    it('records last_used_at shortly after a use', async () => {
      const created = await issueKey(stack, owner, { name: 'used' });
      const before = Date.now();
      expect((await withKey(stack, created.key)).status).toBe(200);
      const lastUsed = async () => (await listKeys(stack, owner)).find((key) => key.id === created.id)?.last_used_at;
      await expect.poll(lastUsed, { interval: 100, timeout: 2_000 }).toBeTruthy();
      expect(Date.parse((await lastUsed())!)).toBeGreaterThanOrEqual(before - 1);
    });
  });

  describe('refused keys', () => {
    it('refuses an unknown key that is well formed: 401 invalid_api_key, without echoing it', async () => {
      const created = await issueKey(stack, owner, { name: 'template' });
      const neverIssued = generateApiKey('gth_');
      const mistyped = created.key.slice(0, -1) + (created.key.endsWith('A') ? 'B' : 'A');
      for (const candidate of [neverIssued, mistyped]) {
        const response = await withKey(stack, candidate);
        expect(response.headers.get('www-authenticate')).toMatch(/^Bearer/);
        const text = JSON.stringify(await expectApiError(response, 401, 'invalid_api_key'));
        expect(JSON.parse(text).error.type).toBe('authentication_error');
        expect(JSON.parse(text).error.message).toMatch(/incorrect|invalid/i);
        expect(text).not.toContain(secretPartOf(candidate));
      }
    });

    it('accepts keys only in Authorization: Bearer, never in other headers or schemes', async () => {
      const created = await issueKey(stack, owner, { name: 'elsewhere' });
      const forwardedBefore = stack.platform.requests.length;
      const elsewhere: Array<Record<string, string>> = [
        { 'x-api-key': created.key },
        { 'api-key': created.key },
        { 'proxy-authorization': `Bearer ${created.key}` },
        { authorization: `Basic ${Buffer.from(`${created.key}:`).toString('base64')}` },
        { authorization: `Basic ${Buffer.from(`user:${created.key}`).toString('base64')}` },
        { authorization: `Token ${created.key}` },
        { authorization: created.key },
        { authorization: `Bearer ${created.key} ${created.key}` },
        { authorization: `Bearer ${created.key},Bearer ${created.key}` },
        { authorization: 'Bearer' },
        { cookie: `api_key=${created.key}` },
      ];
      for (const headers of elsewhere) {
        const response = await fetch(`${stack.url}/echo/elsewhere`, { headers });
        // A credential in Authorization that is not a Bearer key is malformed; anywhere else it is not seen.
        const code = 'authorization' in headers ? 'invalid_authorization_header' : 'missing_credentials';
        const text = JSON.stringify(await expectApiError(response, 401, code));
        expect(text, JSON.stringify(Object.keys(headers))).not.toContain(secretPartOf(created.key));
      }
      expect(stack.platform.requests.length).toBe(forwardedBefore);
    });

    it('never accepts a key from the query string', async () => {
      const created = await issueKey(stack, owner, { name: 'query' });
      const forwardedBefore = stack.platform.requests.length;
      for (const parameter of ['api_key', 'key', 'access_token', 'token']) {
        const response = await fetch(`${stack.url}/echo/query?${parameter}=${created.key}`);
        const text = JSON.stringify(await expectApiError(response, 401, 'missing_credentials'));
        expect(text).not.toContain(secretPartOf(created.key));
        await expectApiError(
          await fetch(`${stack.url}/v1/auth/me?${parameter}=${created.key}`),
          401,
          'missing_credentials',
        );
      }
      expect(stack.platform.requests.length).toBe(forwardedBefore);
    });

    it('answers an 8 KB Authorization with 401, not 500', async () => {
      for (const value of [`Bearer ${'a'.repeat(8192)}`, `Bearer gth_${'A'.repeat(8192)}`, 'x'.repeat(8192)]) {
        await expectApiError(
          await fetch(`${stack.url}/echo/long`, { headers: { authorization: value } }),
          401,
          value.startsWith('Bearer ') ? 'invalid_api_key' : 'invalid_authorization_header',
        );
      }
    });

    it('answers non-ASCII Authorization values with 401, not 500', async () => {
      const created = await issueKey(stack, owner, { name: 'unicode' });
      await expectApiError(
        await fetch(`${stack.url}/echo/latin1`, { headers: { authorization: 'Bearer gth_é' } }),
        401,
        'invalid_authorization_header',
      );
      const utf8Values = [
        `Bearer gth_ключ${created.key.slice(8)}`,
        `Bearer ${created.key}\u00a0`,
        'Bearer 🔑',
        `Bearer ${created.key.slice(0, 10)}ß${created.key.slice(11)}`,
      ];
      for (const value of utf8Values) {
        expect(await rawGet(stack.url, '/echo/utf8', [Buffer.from(`Authorization: ${value}`, 'utf8')])).toBe(401);
      }
    });

    it('answers an Authorization beyond the header limit with 431 and keeps serving', async () => {
      const status = await rawGet(stack.url, '/echo/huge', [
        Buffer.from(`Authorization: Bearer ${'a'.repeat(40_000)}`),
      ]);
      expect(status).toBe(431);
      expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
    });

    it('keeps serving valid keys after all the malformed requests, with the limit off (0) never answering 429', async () => {
      for (let i = 0; i < 80; i++) {
        await expectApiError(await withKey(stack, `gth_${String(i).padStart(36, '0')}`), 401, 'invalid_api_key');
      }
      const created = await issueKey(stack, owner, { name: 'still works' });
      expect((await withKey(stack, created.key)).status).toBe(200);
      expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
    });
  });

  describe('the static test token', () => {
    it('is accepted as auth.test_token_email, and never forwarded', async () => {
      const response = await withKey(stack, TEST_TOKEN, '/echo/test-token');
      expect(response.status).toBe(200);
      const text = await response.text();
      const echo = JSON.parse(text) as Echo;
      expect(echo.headers['x-forwarded-email']).toBe(TEST_TOKEN_EMAIL);
      expect(echo.headers['x-forwarded-user']).toBe(TEST_TOKEN_EMAIL);
      expect(echo.headers['x-forwarded-key-id']).toBe('test_token');
      expect(text).not.toContain(TEST_TOKEN);
      const me = await withKey(stack, TEST_TOKEN, '/v1/auth/me');
      expect(((await me.json()) as { email: string }).email).toBe(TEST_TOKEN_EMAIL);
    });

    it('is not accepted with a character changed', async () => {
      await expectApiError(await withKey(stack, `${TEST_TOKEN.slice(0, -1)}X`), 401, 'invalid_api_key');
    });

    it('is listed as a warning by /readyz', async () => {
      const response = await fetch(`${stack.url}/readyz`);
      const body = (await response.json()) as { warnings?: string[] };
      expect(body.warnings).toContain(TEST_TOKEN_WARNING);
      expect(JSON.stringify(body)).not.toContain(TEST_TOKEN);
    });
  });

  it('generated key_hash_secret into gateway.data_dir with mode 0600', () => {
    const file = join(stack.dataDir, 'key_hash_secret');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8').trim().length).toBeGreaterThanOrEqual(32);
  });

  it('never wrote a key or the test token to the log', () => {
    const log = stack.logs.join('');
    expect(log).toContain('audit: key_created');
    expect(issued.length).toBeGreaterThan(20);
    for (const key of issued) expect(log).not.toContain(secretPartOf(key));
    expect(log).not.toContain(TEST_TOKEN);
  });
});

describe('API keys on a gateway with api_key_max_days: 30 and api_key_prefix: corp_', () => {
  let stack: KeyStack;
  let owner: Browserless;
  beforeAll(async () => {
    stack = await startKeyStack({ api_key_max_days: 30, api_key_prefix: 'corp_' });
    owner = await signedInBrowser(stack);
  });
  afterAll(() => stack.close());

  it('issues keys with the configured prefix', async () => {
    const created = await issueKey(stack, owner);
    expect(created.key).toMatch(/^corp_[0-9A-Za-z]{36}$/);
    expect((await listKeys(stack, owner)).find((key) => key.id === created.id)!.stub).toBe(
      `corp_…${created.key.slice(-4)}`,
    );
    expect((await withKey(stack, created.key)).status).toBe(200);
  });

  it('refuses a key with the default prefix as invalid', async () => {
    const created = await issueKey(stack, owner);
    await expectApiError(await withKey(stack, `gth_${created.key.slice(5)}`), 401, 'invalid_api_key');
  });

  it('defaults the expiry to the maximum', async () => {
    const created = await issueKey(stack, owner, { name: 'default expiry' });
    expect(Date.parse(created.expires_at!) - Date.parse(created.created_at)).toBe(30 * 86_400_000);
  });

  it('accepts the maximum and refuses one day more with 400 expiry_too_long', async () => {
    const created = await issueKey(stack, owner, { name: 'max', expires_in_days: 30 });
    expect(Date.parse(created.expires_at!) - Date.parse(created.created_at)).toBe(30 * 86_400_000);
    const response = await owner.fetch(
      `${stack.url}/v1/auth/api-keys`,
      jsonPost(stack, { name: 'long', expires_in_days: 31 }),
    );
    const text = JSON.stringify(await expectApiError(response, 400, 'expiry_too_long'));
    expect(JSON.parse(text).error.message).toContain('30');
  });

  it('refuses one day more on the account form too, with the reason on the page', async () => {
    const response = await owner.fetch(`${stack.url}/v1/auth/account/keys`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: stack.url },
      body: 'name=long-form&expires_in_days=31&form_token=token-long-form',
    });
    expect(response.status).toBe(400);
    expect(await response.text()).toContain('1 to 30;');
    expect((await listKeys(stack, owner)).some((key) => key.name === 'long-form')).toBe(false);
  });
});

describe('slowing down guessing: auth.failed_auth_per_minute', () => {
  it('after 5 failures from one address answers 429 with Retry-After, even for a valid key', async () => {
    const stack = await startKeyStack({ failed_auth_per_minute: 5 });
    try {
      const owner = await signedInBrowser(stack);
      const created = await issueKey(stack, owner);
      expect((await withKey(stack, created.key)).status).toBe(200);
      for (let i = 0; i < 5; i++) {
        await expectApiError(await withKey(stack, `gth_${String(i).padStart(36, '0')}`), 401, 'invalid_api_key');
      }
      for (const candidate of [created.key, `gth_${'9'.repeat(36)}`]) {
        const response = await withKey(stack, candidate);
        const text = JSON.stringify(await expectApiError(response, 429, 'too_many_failed_attempts'));
        expect(JSON.parse(text).error.type).toBe('rate_limit_error');
        const retryAfter = Number(response.headers.get('retry-after'));
        expect(Number.isInteger(retryAfter)).toBe(true);
        expect(retryAfter).toBeGreaterThanOrEqual(1);
        expect(retryAfter).toBeLessThanOrEqual(60);
        expect(text).not.toContain(secretPartOf(created.key));
      }
    } finally {
      await stack.close();
    }
  });

  it('counts malformed Authorization headers as failures', async () => {
    const stack = await startKeyStack({ failed_auth_per_minute: 5 });
    try {
      for (let i = 0; i < 5; i++) {
        await expectApiError(
          await fetch(`${stack.url}/echo/x`, { headers: { authorization: `Basic ${i}` } }),
          401,
          'invalid_authorization_header',
        );
      }
      await expectApiError(await withKey(stack, `gth_${'1'.repeat(36)}`), 429, 'too_many_failed_attempts');
    } finally {
      await stack.close();
    }
  });

  it('allows 60 failures a minute by default and refuses the 61st attempt', async () => {
    const stack = await startKeyStack();
    try {
      for (let i = 0; i < 60; i++) {
        await expectApiError(await withKey(stack, `gth_${String(i).padStart(36, '0')}`), 401, 'invalid_api_key');
      }
      await expectApiError(await withKey(stack, `gth_${'1'.repeat(36)}`), 429, 'too_many_failed_attempts');
    } finally {
      await stack.close();
    }
  });
});

describe('API keys in a file-backed SQLite database', () => {
  let stack: KeyStack;
  let owner: Browserless;
  let databasePath: string;
  let closed = false;
  beforeAll(async () => {
    databasePath = join(tempDir(), 'gh.db');
    stack = await startKeyStack({}, { database: { url: `sqlite:${databasePath}` } });
    owner = await signedInBrowser(stack);
  });
  afterAll(async () => {
    if (!closed) await stack.close();
  });

  it('refuses a key as expired within a second of its expiry passing in the database', async () => {
    const created = await issueKey(stack, owner, { name: 'expiring', expires_in_days: 1 });
    expect((await withKey(stack, created.key)).status).toBe(200);
    const expiredAt = Date.now() - 60_000;
    const database = new SqliteDatabase(databasePath);
    try {
      database.pragma('busy_timeout = 5000');
      expect(
        database.prepare('update api_keys set expires_at = ? where id = ?').run(expiredAt, created.id).changes,
      ).toBe(1);
    } finally {
      database.close();
    }
    await sleep(1_100);
    const text = JSON.stringify(await expectApiError(await withKey(stack, created.key), 401, 'expired_api_key'));
    const message = (JSON.parse(text) as ApiErrorBody).error.message;
    expect(message).toMatch(/expired/i);
    expect(message).toContain(new Date(expiredAt).toISOString());
    expect(text).not.toContain(secretPartOf(created.key));
  });

  it('stores only the HMAC and the stub: no key, nor its random part, is in the database files', async () => {
    const created = await Promise.all(['one', 'two', 'three'].map((name) => issueKey(stack, owner, { name })));
    for (const { key } of created) expect((await withKey(stack, key)).status).toBe(200);
    await sleep(50); // let last_used_at be written before closing
    const secret = readFileSync(join(stack.dataDir, 'key_hash_secret'), 'utf8').trim();
    await stack.close();
    closed = true;
    const files = [databasePath, `${databasePath}-wal`, `${databasePath}-shm`].filter((file) => existsSync(file));
    const bytes = Buffer.concat(files.map((file) => readFileSync(file)));
    for (const { key } of created) {
      const random = key.slice(4, 34);
      expect(bytes.includes(key)).toBe(false);
      expect(bytes.includes(random)).toBe(false);
      expect(bytes.includes(random.slice(0, 12))).toBe(false);
      expect(bytes.includes(Buffer.from(`gth_…${key.slice(-4)}`))).toBe(true);
      expect(bytes.includes(hashApiKey(secret, key))).toBe(true);
    }
  });
});
