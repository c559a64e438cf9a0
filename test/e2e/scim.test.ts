/**
 * SCIM provisioning against two running gateways that share one database (SQLite file, or with
 * GATEHOUSE_TEST_DATABASE=postgres a PostgreSQL schema): Okta's and Entra ID's documented request
 * sequences, deprovisioning in the middle of an open stream, and the refusals of bad input.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { expectApiError } from '../support/api-error.js';
import { Browserless } from '../support/browserless.js';
import { PROMISED_WITHIN_MS } from '../support/change-channels.js';
import { startFaultyProvider, type FaultyProvider } from '../support/faulty-provider.js';
import { createKey } from '../support/keys.js';
import { freePort } from '../support/ports.js';
import { replay, scimFetch } from '../support/scim.js';
import { dropSchema, POSTGRES_URL, uniqueSchema } from '../support/services.js';
import { signIn, signInForSession } from '../support/sign-in.js';
import { openStream } from '../support/streams.js';
import { CLIENT_ID, CLIENT_SECRET, signInThrough, startGateway, type RunningGateway } from '../support/stack.js';
import { msUntil } from '../support/wait.js';

const onPostgres = process.env.GATEHOUSE_TEST_DATABASE === 'postgres';
const TOKEN = `scim-${randomBytes(24).toString('hex')}`;
const ADMIN = { subject: 'admin-1', email: 'admin@example.test' };
const PATCH_OP = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
const USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';

/** Measured figures, printed at the end so runs can be compared. */
const timings: string[] = [];
afterAll(() => {
  if (timings.length) console.info(`SCIM on ${onPostgres ? 'PostgreSQL' : 'SQLite'}:\n  ${timings.join('\n  ')}`);
});

describe('SCIM provisioning on two replicas', () => {
  let dir: string;
  let schema: string | undefined;
  let platform: SamplePlatform;
  let provider: FaultyProvider;
  /** Sign-in and SCIM go to A; B is the other replica, which must hear of every change. */
  let a: RunningGateway;
  let b: RunningGateway;
  let base: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-scim-'));
    const [portA, portB] = [await freePort(), await freePort()];
    platform = await startSamplePlatform({ chunkDelayMs: 20 });
    provider = await startFaultyProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUri: `http://127.0.0.1:${portA}/v1/auth/auth`,
    });
    schema = onPostgres ? uniqueSchema() : undefined;
    const database = schema ? { url: POSTGRES_URL, schema } : { url: `sqlite:${join(dir, 'gatehouse.db')}` };
    const edits = (website: string) =>
      signInThrough(website, provider.metadataUrl, platform.url, {
        database,
        scim: { enabled: true, token: TOKEN },
        auth: {
          admin_emails: [ADMIN.email],
          admin_groups: ['okta-admins', 'entra-admins'],
          // Both replicas must read the same key hashes.
          key_hash_secret: 'scim-test-key-hash-secret-of-enough-length',
        },
      });
    // One after the other: the first migrates the shared database.
    a = await startGateway(edits, portA);
    b = await startGateway(edits, portB);
    base = `${a.url}/scim/v2`;
  }, 60_000);

  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await Promise.all([platform?.close(), provider?.close()]);
    if (schema) await dropSchema(schema);
    rmSync(dir, { recursive: true, force: true });
  });

  const scim = (method: string, path: string, body?: unknown, token = TOKEN) =>
    scimFetch(base, token, method, path, body);

  async function signInAs(who: { subject: string; email: string }): Promise<Browserless> {
    provider.subject = who.subject;
    provider.email = who.email;
    const browser = new Browserless();
    await signInForSession(a, browser);
    return browser;
  }

  async function signInRefused(who: { subject: string; email: string }): Promise<void> {
    provider.subject = who.subject;
    provider.email = who.email;
    const { callback } = await signIn(a, new Browserless());
    expect(callback.status).toBe(403);
    expect(await callback.text()).toContain('Account disabled');
  }

  /**
   * The status of a probe of a gateway, read to its end. A probe that hangs fails after 10 s naming
   * itself and showing what the gateways logged last, rather than holding the test and the teardown.
   */
  async function statusOf(on: RunningGateway, path: string, send: typeof fetch = fetch, init: RequestInit = {}) {
    const asked = `GET ${path} on ${on === a ? 'A' : 'B'}`;
    try {
      const response = await send(`${on.url}${path}`, { ...init, signal: AbortSignal.timeout(10_000) });
      await response.arrayBuffer();
      return response.status;
    } catch (error) {
      const logged = [...a.logs.slice(-5).map((line) => `A: ${line}`), ...b.logs.slice(-5).map((line) => `B: ${line}`)];
      throw new Error(`${asked} got no answer: ${String(error)}; last log lines:\n${logged.join('')}`);
    }
  }
  const adminApi = (browser: Browserless) =>
    statusOf(a, '/v1/auth/admin/users', (url, init) => browser.fetch(String(url), init));
  const withKey = (on: RunningGateway, key: string) =>
    statusOf(on, '/echo/scim', fetch, { headers: { authorization: `Bearer ${key}` } });
  const sessionOn = (on: RunningGateway, browser: Browserless) =>
    statusOf(on, '/v1/auth/me', fetch, {
      headers: { cookie: `gatehouse_session=${browser.cookie(a.url, 'gatehouse_session')}` },
    });

  /** What each point of a provider's sequence must have done to the person's sign-in, session and keys. */
  function checkpoints(provider: string, who: { subject: string; email: string }) {
    let browser: Browserless;
    let key: string;
    return async (name: string) => {
      if (name === 'in admin group') {
        browser = await signInAs(who);
        expect(await adminApi(browser), 'a member of an admin group pushed over SCIM is an admin').toBe(200);
        key = (await createKey(a, browser, { name: `${provider} key` })).key;
        expect(await withKey(b, key)).toBe(200);
      } else if (name === 'out of admin group') {
        const elapsed = await msUntil(async () => (await adminApi(browser)) === 403, Date.now());
        timings.push(`${provider}: admin role gone ${elapsed} ms after the group PATCH answered`);
        expect(elapsed).toBeLessThan(PROMISED_WITHIN_MS);
      } else if (name === 'deactivated' || name === 'deleted') {
        const since = Date.now();
        const keyRefused = await msUntil(async () => (await withKey(b, key)) === 403, since);
        const sessionRefused = await msUntil(async () => (await sessionOn(b, browser)) === 401, since);
        timings.push(
          `${provider} ${name}: key refused on B after ${keyRefused} ms, session after ${sessionRefused} ms`,
        );
        expect(keyRefused).toBeLessThan(PROMISED_WITHIN_MS);
        expect(sessionRefused).toBeLessThan(PROMISED_WITHIN_MS);
        await expectApiError(
          await fetch(`${b.url}/echo/scim`, { headers: { authorization: `Bearer ${key}` } }),
          403,
          'account_disabled',
        );
        await signInRefused(who);
      } else if (name === 'reactivated') {
        const elapsed = await msUntil(async () => (await withKey(b, key)) === 200, Date.now());
        timings.push(`${provider}: key working again on B ${elapsed} ms after reactivation`);
        expect(elapsed).toBeLessThan(PROMISED_WITHIN_MS);
        // Reactivation restores the account, never the sessions that deactivation ended.
        expect(await sessionOn(a, browser)).toBe(401);
        browser = await signInAs(who);
        expect(await sessionOn(b, browser)).toBe(200);
      } else {
        throw new Error(`no checks for checkpoint ${name}`);
      }
    };
  }

  it('plays Okta’s documented sequence: create, PUT, group membership, deactivate, reactivate', async () => {
    const who = { subject: 'okta-00ujl29u0le5T6Aj10h7', email: 'ada.okta@example.test' };
    await replay(
      'okta.json',
      { base, token: TOKEN, vars: { userName: who.email, adminGroup: 'okta-admins' } },
      checkpoints('Okta', who),
    );
  });

  it('plays Entra ID’s documented sequence: capitalised ops, "False", filtered paths, the enterprise extension, delete', async () => {
    const who = { subject: 'entra-0a21f0f2', email: 'grace.entra@example.test' };
    await replay(
      'entra.json',
      { base, token: TOKEN, vars: { userName: who.email, adminGroup: 'entra-admins' } },
      checkpoints('Entra ID', who),
    );
  });

  it(`cuts a user's open stream on the other replica within ${PROMISED_WITHIN_MS} ms of deactivation, and refuses their keys there`, async () => {
    const who = { subject: 'okta-lin', email: 'lin@example.test' };
    const created = await scim('POST', '/Users', { schemas: [USER_SCHEMA], userName: who.email, active: true });
    expect(created.status).toBe(201);
    const browser = await signInAs(who);
    const { key } = await createKey(a, browser, { name: 'streams' });

    const stream = await openStream(`${b.url}/slow-stream?chunks=200&delayMs=50`, { authorization: `Bearer ${key}` });

    const deactivated = await scim('PATCH', `/Users/${String(created.body.id)}`, {
      schemas: [PATCH_OP],
      Operations: [{ op: 'replace', value: { active: false } }],
    });
    expect(deactivated.status).toBe(200);
    const answered = Date.now();
    const { received, stillOpen } = await stream.readToEnd(3 * PROMISED_WITHIN_MS);
    const cut = Date.now() - answered;
    const keyRefused = await msUntil(async () => (await withKey(b, key)) === 403, answered);
    timings.push(`deactivation: stream on B cut ${cut} ms, key refused on B ${keyRefused} ms after the PATCH answered`);
    expect(stillOpen, 'the stream on B was still open').toBe(false);
    expect(received).not.toContain('[DONE]');
    expect(cut).toBeLessThan(PROMISED_WITHIN_MS);
    expect(keyRefused).toBeLessThan(PROMISED_WITHIN_MS);
  });

  describe('refuses bad input in the SCIM error shape, applying nothing', () => {
    const userCount = async () => Number((await scim('GET', '/Users?count=0')).body.totalResults);

    function expectScimError(answer: Awaited<ReturnType<typeof scim>>, status: number, scimType?: string) {
      expect(answer.status, JSON.stringify(answer.body)).toBe(status);
      expect(answer.type).toContain('application/scim+json');
      expect(answer.body).toMatchObject({
        schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'],
        status: String(status),
        ...(scimType ? { scimType } : {}),
      });
      expect(typeof answer.body.detail).toBe('string');
    }

    it('malformed JSON', async () => {
      const before = await userCount();
      expectScimError(
        await scim('POST', '/Users', '{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": '),
        400,
        'invalidSyntax',
      );
      expect(await userCount()).toBe(before);
    });

    it('unknown schemas', async () => {
      const before = await userCount();
      const body = {
        schemas: [USER_SCHEMA, 'urn:example:params:scim:schemas:extension:acme:2.0:User'],
        userName: 'x@example.test',
      };
      expectScimError(await scim('POST', '/Users', body), 400, 'invalidSyntax');
      expectScimError(
        await scim('POST', '/Users', { schemas: ['urn:example:User'], userName: 'x@example.test' }),
        400,
        'invalidSyntax',
      );
      expect(await userCount()).toBe(before);
    });

    it('filters outside the supported grammar', async () => {
      for (const filter of [
        'userName co "ada"',
        'name.givenName eq "Ada"',
        'userName eq "a" or userName eq "b"',
        'emails[type eq "work"]',
        'userName eq',
      ]) {
        expectScimError(await scim('GET', `/Users?filter=${encodeURIComponent(filter)}`), 400, 'invalidFilter');
      }
    });

    it('an oversized body', async () => {
      const before = await userCount();
      const body = { schemas: [USER_SCHEMA], userName: 'big@example.test', title: 'x'.repeat(2 * 1024 * 1024) };
      expectScimError(await scim('POST', '/Users', body), 413);
      expect(await userCount()).toBe(before);
    });

    it('but takes a large body that fits, and refuses JSON nested deeper than any resource', async () => {
      const body = { schemas: [USER_SCHEMA], userName: 'large@example.test', title: 'x'.repeat(900 * 1024) };
      expect((await scim('POST', '/Users', body)).status).toBe(201);
      const deep = `{"schemas":["${USER_SCHEMA}"],"userName":"deep@example.test","title":${'['.repeat(1000)}${']'.repeat(1000)}}`;
      expect((await scim('POST', '/Users', deep)).status).toBe(400);
    });

    it('a wrong token, a browser session, or a key without the scim scope or of a non-administrator', async () => {
      expectScimError(await scim('GET', '/Users', undefined, `${TOKEN}x`), 401);
      expectScimError(await scimFetch(base, '', 'GET', '/Users'), 401);
      const admin = await signInAs(ADMIN);
      const session = await admin.fetch(`${base}/Users`);
      expect(session.status).toBe(403);
      expect(session.headers.get('content-type')).toContain('application/scim+json');
      const scimKey = await createKey(a, admin, { name: 'scim', scopes: ['scim'] });
      expect((await scim('GET', '/Users', undefined, scimKey.key)).status).toBe(200);
      const adminKey = await createKey(a, admin, { name: 'admin', scopes: ['admin'] });
      expectScimError(await scim('GET', '/Users', undefined, adminKey.key), 403);
      const member = await signInAs({ subject: 'member-1', email: 'member@example.test' });
      const memberKey = await createKey(a, member, { name: 'scim', scopes: ['scim'] });
      expectScimError(await scim('GET', '/Users', undefined, memberKey.key), 403);
    });

    it('a PATCH whose later operation fails leaves the user as it was, and signed in', async () => {
      const who = { subject: 'okta-half', email: 'half@example.test' };
      const created = await scim('POST', '/Users', { schemas: [USER_SCHEMA], userName: who.email });
      const browser = await signInAs(who);
      const id = String(created.body.id);
      const answer = await scim('PATCH', `/Users/${id}`, {
        schemas: [PATCH_OP],
        Operations: [
          { op: 'replace', path: 'active', value: false },
          { op: 'replace', path: 'urn:example:unknown:attribute', value: 1 },
        ],
      });
      expectScimError(answer, 400, 'invalidPath');
      expect((await scim('GET', `/Users/${id}`)).body.active).toBe(true);
      expect(await sessionOn(a, browser)).toBe(200);
      const group = await scim('POST', '/Groups', {
        schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'],
        displayName: 'half-group',
        members: [{ value: id }, { value: 'no-such-user' }],
      });
      expectScimError(group, 400, 'invalidValue');
      expect((await scim('GET', '/Groups?filter=displayName%20eq%20%22half-group%22')).body.totalResults).toBe(0);
    });

    it('a second user with the same userName, in any case', async () => {
      const first = await scim('POST', '/Users', { schemas: [USER_SCHEMA], userName: 'twice@example.test' });
      expect(first.status).toBe(201);
      expectScimError(
        await scim('POST', '/Users', { schemas: [USER_SCHEMA], userName: 'TWICE@example.test' }),
        409,
        'uniqueness',
      );
    });

    it('unknown resources and paths', async () => {
      expectScimError(await scim('GET', '/Users/no-such-id'), 404);
      expectScimError(await scim('GET', '/Nothing'), 404);
    });
  });

  it('shows administrators which users SCIM manages, and audits every SCIM operation', async () => {
    const who = { subject: 'okta-ines', email: 'ines@example.test' };
    const created = await scim('POST', '/Users', { schemas: [USER_SCHEMA], userName: who.email });
    await signInAs(who);
    const admin = await signInAs(ADMIN);
    const users = (await (await admin.fetch(`${a.url}/v1/auth/admin/users`)).json()) as {
      data: Array<{ email: string; scim_updated_at: number | null }>;
    };
    expect(users.data.find((user) => user.email === who.email)?.scim_updated_at).toEqual(expect.any(Number));
    expect(users.data.find((user) => user.email === ADMIN.email)?.scim_updated_at).toBeNull();
    const page = await (await admin.fetch(`${a.url}/v1/auth/admin`)).text();
    expect(page).toContain('Provisioned over SCIM');
    const audit = await (await admin.fetch(`${a.url}/v1/auth/admin/audit?event=scim_user_created`)).text();
    expect(audit).toContain(String(created.body.id));
    expect(audit).toContain('"actor_email":"scim.token"');
  });

  it('answers the discovery resources', async () => {
    const config = await scim('GET', '/ServiceProviderConfig');
    expect(config.status).toBe(200);
    expect(config.body).toMatchObject({ patch: { supported: true }, filter: { supported: true } });
    expect((await scim('GET', '/ResourceTypes')).body.totalResults).toBe(2);
    expect((await scim('GET', '/Schemas')).body.totalResults).toBe(3);
    expect((await scim('GET', '/ResourceTypes/User')).body).toMatchObject({ endpoint: '/Users' });
  });
});
