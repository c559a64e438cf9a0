/**
 * Who may enter and what they may do, end to end: every rule is exercised through the real sign-in
 * (login -> faulty provider -> callback) or a real request through the gateway to the sample
 * platform, and every rule has a test that tries to get around it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_EVENTS, type AuditRecord } from '../../src/audit/log.js';
import { SESSION_CACHE_MS } from '../../src/sessions/store.js';
import { Browserless } from '../support/browserless.js';
import { PROMISED_WITHIN_MS } from '../support/change-channels.js';
import { signIn } from '../support/sign-in.js';
import { CLIENT_SECRET, startFaultyStack, type FaultyStack } from '../support/stack.js';
import { expectApiError } from '../support/api-error.js';
import { createKey, type CreatedKey } from '../support/keys.js';
import { rawStatus, sendRequest } from '../support/raw-http.js';
import { readEvents } from '../support/sse.js';
import { msUntil } from '../support/wait.js';

/** Who signs in: the provider's `sub` and `email`, and any claims to add or replace (`undefined` leaves one out). */
interface Person {
  sub: string;
  email: string;
  claims?: Record<string, unknown>;
}

interface AdminUser {
  id: string;
  issuer: string;
  subject: string;
  email: string | null;
  role: 'admin' | 'user';
  groups: string[];
  disabled: boolean;
  key_count: number;
  active_sessions: number;
}

interface AdminKey {
  id: string;
  /** An ISO time in the user's own API, milliseconds here; either is read below. */
  revoked_at: string | number | null;
}

/** A line of the JSON lines export: the audit record as the module defines it. */
type AuditLine = AuditRecord;

/** A provider's way of sending groups: the claim path, claims that admit, claims that do not. */
interface GroupsClaimCase {
  provider: string;
  groupsClaim: string;
  member: Record<string, unknown>;
  others: Record<string, unknown>[];
}

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string | undefined>;
}

/** The text of each refusal page, by the reason recorded in the audit log. */
const REFUSAL_MESSAGES: Record<string, RegExp> = {
  email_missing: /did not share an email address/,
  email_invalid: /not a valid address/,
  email_unverified: /email address is not verified/,
  email_domain_not_allowed: /email domain are not allowed/,
  group_not_allowed: /not in a group allowed/,
  groups_overage: /overage/i,
  user_disabled: /has been disabled by an administrator/,
};

const BOSS: Person = { sub: 'boss-1', email: 'boss@example.com' };
const ADA: Person = { sub: 'ada-1', email: 'ada@example.com' };

/** Every session, key and ID token handed out, so the audit tests can prove none was written down. */
const secrets: string[] = [];

const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** Runs the real sign-in as `person` in a fresh browser; the callback's answer is left unread. */
async function visit(stack: FaultyStack, person: Person): Promise<{ browser: Browserless; callback: Response }> {
  stack.provider.subject = person.sub;
  stack.provider.email = person.email;
  stack.provider.extraClaims = person.claims ?? {};
  const browser = new Browserless();
  const { callback } = await signIn(stack, browser);
  if (stack.provider.lastIdToken) secrets.push(stack.provider.lastIdToken);
  const session = browser.cookie(stack.url, 'gatehouse_session');
  if (session) secrets.push(session);
  return { browser, callback };
}

/** Signs `person` in and expects to be let in: 302 to return_to and a session the gateway knows. */
async function admit(stack: FaultyStack, person: Person): Promise<Browserless> {
  const { browser, callback } = await visit(stack, person);
  expect(callback.status, await callback.clone().text()).toBe(302);
  expect(callback.headers.get('location')).toBe('/v1/models');
  const me = await browser.fetch(`${stack.url}/v1/auth/me`);
  expect(me.status).toBe(200);
  expect(((await me.json()) as { sub: string }).sub).toBe(person.sub);
  return browser;
}

/** Signs `person` in and expects the 403 page for `reason`, no session, and the reason in the audit log. */
async function refuse(stack: FaultyStack, person: Person, reason: string): Promise<void> {
  const earlier = loggedAudits(stack, 'sign_in_failed').length;
  const { browser, callback } = await visit(stack, person);
  const page = await callback.text();
  expect(callback.status, page).toBe(403);
  expect(callback.headers.get('content-type')).toMatch(/^text\/html/);
  expect(page).toMatch(REFUSAL_MESSAGES[reason]!);
  expect(browser.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
  // This refusal's own entry, not an older one: exactly one more, naming the reason. (msUntil, not
  // expect.poll: some suites refuse in beforeAll.)
  const added = () => loggedAudits(stack, 'sign_in_failed').slice(earlier);
  await msUntil(async () => added().length > 0, Date.now(), { limitMs: 2_000 });
  expect(added()).toEqual([expect.objectContaining({ detail: { reason } })]);
}

/** The audit entries the gateway wrote to its log, oldest first. */
function loggedAudits(stack: FaultyStack, event?: string): AuditLine[] {
  return stack.logs
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.includes('"audit"'))
    .map((line) => (JSON.parse(line) as { audit: AuditLine }).audit)
    .filter((entry) => event === undefined || entry.event === event);
}

/** A state-changing request as the gateway's own pages send it: with the gateway's Origin. */
function sameOriginPost(stack: FaultyStack, body?: unknown): RequestInit {
  return {
    method: 'POST',
    headers: { origin: stack.url, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  };
}

async function listUsers(stack: FaultyStack, admin: Browserless): Promise<AdminUser[]> {
  const response = await admin.fetch(`${stack.url}/v1/auth/admin/users`);
  expect(response.status).toBe(200);
  expect(response.headers.get('cache-control')).toBe('no-store');
  return ((await response.json()) as { data: AdminUser[] }).data;
}

async function findUser(stack: FaultyStack, admin: Browserless, person: Person): Promise<AdminUser> {
  const user = (await listUsers(stack, admin)).find(
    (entry) => entry.subject === person.sub && entry.issuer === stack.provider.issuer,
  );
  expect(user, `no user row for ${person.sub}`).toBeDefined();
  return user!;
}

/** Creates a key and remembers its secret, which no log line may hold. */
async function issueKey(stack: FaultyStack, owner: Browserless): Promise<CreatedKey> {
  const created = await createKey(stack, owner, { name: 'policy' });
  secrets.push(created.key);
  return created;
}

function withKey(stack: FaultyStack, key: string, path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${stack.url}${path}`, { ...init, headers: { ...init.headers, authorization: `Bearer ${key}` } });
}

function sessionHeader(stack: FaultyStack, browser: Browserless): Record<string, string> {
  return { cookie: `gatehouse_session=${browser.cookie(stack.url, 'gatehouse_session')}` };
}

function forwardedSince(stack: FaultyStack, count: number): string[] {
  return stack.platform.requests.slice(count).map((request) => request.url);
}

describe('sign-in by email domain: allowed_email_domains [example.com]', () => {
  let stack: FaultyStack;
  let boss: Browserless;
  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: { allowed_email_domains: ['example.com'], admin_emails: [BOSS.email] },
    });
    boss = await admit(stack, BOSS);
  });
  afterAll(() => stack.close());

  it.each([
    ['ada@example.com', 'the domain itself'],
    ['ADA@EXAMPLE.COM', 'the domain in capitals (domains ignore case)'],
    ['ada@Example.Com', 'the domain in mixed case'],
    ['ada@example.com.', 'the domain with a trailing dot (the root, as in DNS)'],
  ])('admits %s: %s', async (email) => {
    const browser = await admit(stack, { sub: `sub:${email}`, email });
    const me = (await (await browser.fetch(`${stack.url}/v1/auth/me`)).json()) as { email: string };
    expect(me.email).toBe(email);
  });

  it.each([
    ['eve@evil.com', 'another domain', 'email_domain_not_allowed'],
    ['ada@evilexample.com', 'a domain that ends with the allowed one', 'email_domain_not_allowed'],
    ['a@example.com.evil.com', 'a domain that starts with the allowed one', 'email_domain_not_allowed'],
    ['ada@sub.example.com', 'a subdomain (only .example.com admits those)', 'email_domain_not_allowed'],
    ['ada@exаmple.com', 'a lookalike with a Cyrillic а', 'email_domain_not_allowed'],
    ['"a@evil.com"@example.com', 'two @ (parsers disagree on the domain)', 'email_invalid'],
    ['ada@example.com@evil.com', 'two @ the other way round', 'email_invalid'],
    ['ada@example.com\u200b', 'a zero-width space after the domain', 'email_invalid'],
    ['ada@example..com', 'an empty label', 'email_invalid'],
    ['example.com', 'no @ at all', 'email_invalid'],
    ['@example.com', 'an empty local part', 'email_invalid'],
  ])('refuses %s (%s) with the page for %s', async (email, _label, reason) => {
    await refuse(stack, { sub: `sub:${email}`, email }, reason);
  });

  it('refuses a sign-in without an email claim', async () => {
    await refuse(stack, { sub: 'no-email', email: 'x', claims: { email: undefined } }, 'email_missing');
  });

  it('refuses email_verified: false, and the string "false" some providers send', async () => {
    await refuse(
      stack,
      { sub: 'unverified-1', email: 'ada@example.com', claims: { email_verified: false } },
      'email_unverified',
    );
    await refuse(
      stack,
      { sub: 'unverified-2', email: 'ada@example.com', claims: { email_verified: 'false' } },
      'email_unverified',
    );
  });

  it('admits an email without email_verified (Entra ID and Okta leave it out)', async () => {
    await admit(stack, { sub: 'entra-1', email: 'ada@example.com', claims: { email_verified: undefined } });
  });

  it('keeps no user row for anyone it refused', async () => {
    await refuse(stack, { sub: 'refused-row', email: 'eve@evil.com' }, 'email_domain_not_allowed');
    const subjects = (await listUsers(stack, boss)).map((user) => user.subject);
    expect(subjects).not.toContain('refused-row');
    expect(subjects).not.toContain('sub:eve@evil.com');
    expect(subjects).not.toContain('unverified-1');
    expect(subjects).toContain('entra-1');
  });
});

describe('sign-in with allow_unverified_email: true', () => {
  let stack: FaultyStack;
  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: { allowed_email_domains: ['example.com'], allow_unverified_email: true, admin_emails: [BOSS.email] },
    });
  });
  afterAll(() => stack.close());

  it('admits an address the provider marks unverified', async () => {
    await admit(stack, { ...ADA, claims: { email_verified: false } });
  });

  it('still refuses an unverified address outside the allowed domains', async () => {
    await refuse(
      stack,
      { sub: 'eve', email: 'eve@evil.com', claims: { email_verified: false } },
      'email_domain_not_allowed',
    );
  });

  it('never makes an unverified address an admin, though it is in admin_emails', async () => {
    const unverified = await admit(stack, { ...BOSS, claims: { email_verified: false } });
    await expectApiError(await unverified.fetch(`${stack.url}/v1/auth/admin/users`), 403, 'admin_required');
    const verified = await admit(stack, BOSS);
    expect((await findUser(stack, verified, BOSS)).role).toBe('admin');
  });
});

describe('sign-in by subdomain: allowed_email_domains [.example.com]', () => {
  let stack: FaultyStack;
  beforeAll(async () => {
    stack = await startFaultyStack({ auth: { allowed_email_domains: ['.example.com'] } });
  });
  afterAll(() => stack.close());

  it.each(['ada@eng.example.com', 'ada@a.b.example.com', 'ada@ENG.Example.COM'])('admits %s', async (email) => {
    await admit(stack, { sub: `sub:${email}`, email });
  });

  it.each(['ada@example.com', 'ada@evilexample.com', 'ada@eng.example.com.evil.com', 'ada@.example.com'])(
    'refuses %s',
    async (email) => {
      const { callback } = await visit(stack, { sub: `sub:${email}`, email });
      expect(callback.status).toBe(403);
      expect(await callback.text()).toMatch(/email domain are not allowed|not a valid address/);
    },
  );
});

describe('sign-in with the legacy google_whitelist: example.com (one string)', () => {
  let stack: FaultyStack;
  beforeAll(async () => {
    stack = await startFaultyStack({ auth: { google_whitelist: 'example.com' } });
  });
  afterAll(() => stack.close());

  it.each(['ada@example.com', 'ADA@EXAMPLE.COM', 'ada@example.com.'])('admits %s', async (email) => {
    await admit(stack, { sub: `sub:${email}`, email });
  });

  it.each(['eve@evil.com', 'ada@evilexample.com', 'a@example.com.evil.com', 'ada@sub.example.com'])(
    'refuses %s',
    async (email) => {
      await refuse(stack, { sub: `sub:${email}`, email }, 'email_domain_not_allowed');
    },
  );

  it('refuses two @ as invalid', async () => {
    await refuse(stack, { sub: 'two-at', email: '"a@evil.com"@example.com' }, 'email_invalid');
  });
});

describe('sign-in by group: allowed_groups [llm-users] from the groups claim', () => {
  let stack: FaultyStack;
  beforeAll(async () => {
    stack = await startFaultyStack({ auth: { allowed_groups: ['llm-users'] } });
  });
  afterAll(() => stack.close());

  it.each([
    ['a list holding the group', ['llm-users']],
    ['the group among others', ['staff', 'llm-users']],
    ['the group as a single string', 'llm-users'],
  ])('admits %s', async (_label, groups) => {
    await admit(stack, { ...ADA, claims: { groups } });
  });

  it.each([
    ['another group', ['staff']],
    ['an empty list', []],
    ['no groups claim', undefined],
    ['the group in other case (names are exact)', ['LLM-Users']],
    ['the group with a space', [' llm-users']],
    ['an object naming the group', { 'llm-users': true }],
    ['the group nested one level down', [['llm-users']]],
  ])('refuses %s', async (_label, groups) => {
    await refuse(stack, { ...ADA, claims: { groups } }, 'group_not_allowed');
  });

  it('refuses an Entra ID group overage, saying so, instead of judging the missing groups', async () => {
    await refuse(
      stack,
      {
        ...ADA,
        claims: {
          _claim_names: { groups: 'src1' },
          _claim_sources: {
            src1: { endpoint: 'https://graph.microsoft.com/v1.0/users/ada/getMemberObjects' },
          },
        },
      },
      'groups_overage',
    );
  });

  it('refuses hasgroups: true as an overage too', async () => {
    await refuse(stack, { ...ADA, claims: { hasgroups: true } }, 'groups_overage');
  });

  it('sends the groups to the platform as X-Forwarded-Groups', async () => {
    const browser = await admit(stack, { ...ADA, claims: { groups: ['staff', 'llm-users'] } });
    const response = await browser.fetch(`${stack.url}/echo/groups`);
    expect(((await response.json()) as Echo).headers['x-forwarded-groups']).toBe('staff,llm-users');
  });
});

describe.each<GroupsClaimCase>([
  {
    provider: 'Keycloak',
    groupsClaim: 'realm_access.roles',
    member: { realm_access: { roles: ['offline_access', 'llm-users'] } },
    others: [
      { realm_access: { roles: ['offline_access'] } },
      { groups: ['llm-users'] },
      { realm_access: ['llm-users'] },
      { resource_access: { gatehouse: { roles: ['llm-users'] } } },
    ],
  },
  {
    provider: 'Auth0 (a namespaced claim)',
    groupsClaim: 'https://example.com/groups',
    member: { 'https://example.com/groups': ['llm-users'] },
    others: [
      { groups: ['llm-users'] },
      { 'https://example.com/groups': ['staff'] },
      { 'https://example.com/roles': ['llm-users'] },
    ],
  },
])('sign-in by group with $provider: groups_claim $groupsClaim', ({ groupsClaim, member, others }) => {
  let stack: FaultyStack;
  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: { allowed_groups: ['llm-users'] },
      auth_provider: { groups_claim: groupsClaim },
    });
  });
  afterAll(() => stack.close());

  it('admits a member', async () => {
    await admit(stack, { ...ADA, claims: member });
  });

  it.each(others)('refuses %j', async (claims) => {
    await refuse(stack, { ...ADA, claims }, 'group_not_allowed');
  });
});

describe('roles, path rules and the admin console', () => {
  let stack: FaultyStack;
  let boss: Browserless;
  let ada: Browserless;
  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: {
        allowed_email_domains: ['example.com'],
        admin_emails: [BOSS.email],
        admin_groups: ['llm-admins'],
        failed_auth_per_minute: 0,
      },
      gateway: { public_paths: ['^/public/'], admin_paths: ['^/echo/admin'] },
    });
    boss = await admit(stack, BOSS);
    ada = await admit(stack, ADA);
  });
  afterAll(() => stack.close());

  describe('roles', () => {
    it('makes an address in admin_emails an admin, and lists everyone with their role', async () => {
      const response = await boss.fetch(`${stack.url}/v1/auth/admin/users`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
      const body = (await response.json()) as { object: string; data: AdminUser[] };
      expect(body.object).toBe('list');
      expect(body.data.find((user) => user.subject === BOSS.sub)).toMatchObject({ email: BOSS.email, role: 'admin' });
      expect(body.data.find((user) => user.subject === ADA.sub)).toMatchObject({ email: ADA.email, role: 'user' });
    });

    it('matches admin_emails without regard to case', async () => {
      const shouting = await admit(stack, { sub: 'boss-upper', email: 'BOSS@Example.COM' });
      expect((await findUser(stack, shouting, { sub: 'boss-upper', email: '' })).role).toBe('admin');
    });

    it('makes a member of an admin_groups group an admin', async () => {
      const carol = { sub: 'carol-1', email: 'carol@example.com', claims: { groups: ['llm-admins'] } };
      const browser = await admit(stack, carol);
      expect(await findUser(stack, browser, carol)).toMatchObject({ role: 'admin', groups: ['llm-admins'] });
    });

    it('answers a plain user 403 JSON on every admin route', async () => {
      for (const path of ['/users', '/keys', '/audit', '']) {
        const body = await expectApiError(await ada.fetch(`${stack.url}/v1/auth/admin${path}`), 403, 'admin_required');
        expect(body.error.type).toBe('permission_error');
      }
    });

    it('answers 401 to a program that is not signed in', async () => {
      await expectApiError(await fetch(`${stack.url}/v1/auth/admin/users`), 401, 'missing_credentials');
    });

    it('recomputes the role at each sign-in: leaving the admin group ends admin rights, old sessions included', async () => {
      const dan = { sub: 'dan-1', email: 'dan@example.com', claims: { groups: ['llm-admins'] } };
      const first = await admit(stack, dan);
      expect((await first.fetch(`${stack.url}/v1/auth/admin/users`)).status).toBe(200);
      const second = await admit(stack, { ...dan, claims: { groups: ['staff'] } });
      await expectApiError(await second.fetch(`${stack.url}/v1/auth/admin/users`), 403, 'admin_required');
      await expectApiError(await first.fetch(`${stack.url}/v1/auth/admin/users`), 403, 'admin_required');
      expect(await findUser(stack, boss, dan)).toMatchObject({ role: 'user', groups: ['staff'] });
      const third = await admit(stack, dan);
      expect((await third.fetch(`${stack.url}/v1/auth/admin/users`)).status).toBe(200);
    });

    it('keeps the same email under two subjects as two users', async () => {
      await admit(stack, { sub: 'twin-1', email: 'twin@example.com' });
      await admit(stack, { sub: 'twin-2', email: 'twin@example.com' });
      const twins = (await listUsers(stack, boss)).filter((user) => user.email === 'twin@example.com');
      expect(twins.map((user) => user.subject).sort()).toEqual(['twin-1', 'twin-2']);
      expect(new Set(twins.map((user) => user.id)).size).toBe(2);
    });
  });

  describe('path rules', () => {
    let adaKey: { id: string; key: string };
    beforeAll(async () => {
      adaKey = await issueKey(stack, ada);
    });

    it('forwards a public path without sign-in', async () => {
      const before = stack.platform.requests.length;
      const response = await fetch(`${stack.url}/public/x?y=1`);
      expect(response.status).toBe(404); // the sample platform's own answer: it has no /public route
      expect(((await response.json()) as { error: { message: string } }).error.message).toContain('/public/x');
      expect(forwardedSince(stack, before)).toEqual(['/public/x?y=1']);
    });

    it('matches public paths case-sensitively, so /PUBLIC/x still needs sign-in', async () => {
      const before = stack.platform.requests.length;
      await expectApiError(await fetch(`${stack.url}/PUBLIC/x`), 401, 'missing_credentials');
      expect(forwardedSince(stack, before)).toEqual([]);
    });

    it('refuses an admin path to a plain user (session or key) with 403, and forwards it for an admin', async () => {
      const before = stack.platform.requests.length;
      await expectApiError(await ada.fetch(`${stack.url}/echo/admin/x`), 403, 'admin_required');
      const adaKey = await issueKey(stack, ada);
      await expectApiError(await withKey(stack, adaKey.key, '/echo/admin/x'), 403, 'admin_required');
      await expectApiError(await fetch(`${stack.url}/echo/admin/x`), 401, 'missing_credentials');
      expect(forwardedSince(stack, before)).toEqual([]);
      const response = await boss.fetch(`${stack.url}/echo/admin/x`);
      expect(response.status).toBe(200);
      expect(((await response.json()) as Echo).headers['x-forwarded-user']).toBe(BOSS.sub);
      expect(forwardedSince(stack, before)).toEqual(['/echo/admin/x']);
    });

    const tricks: Array<[string, string]> = [
      ['/echo/%61dmin', 'a percent-encoded letter'],
      ['/echo/%41DMIN', 'an encoded capital'],
      ['/echo//admin', 'a doubled slash'],
      ['//echo/admin', 'a leading doubled slash'],
      ['/echo/./admin', 'a dot segment'],
      ['/echo/x/../admin', 'a dot-dot segment'],
      ['/echo/%2e%2e/echo/admin', 'an encoded dot-dot segment'],
      ['/ECHO/ADMIN', 'capitals (admin rules ignore case)'],
      ['/Echo/Admin/x', 'mixed case'],
      ['/echo/admin;x=1', 'a ;parameter'],
      ['/echo/admin;/x', 'an empty ;parameter'],
      ['/echo/admin%23', 'an encoded #'],
      ['/echo/admin%2fx', 'an encoded /'],
      ['/echo/%2561dmin', 'double encoding'],
      ['/echo/admin%00', 'an encoded NUL'],
      ['/public/%2e%2e/echo/admin', 'an encoded dot-dot out of a public path'],
      ['/public/..;/echo/admin', 'the Tomcat ..; out of a public path'],
      ['/public/../echo/admin', 'a dot-dot out of a public path'],
      ['/public/%2E%2E/echo/admin', 'an encoded dot-dot in capitals out of a public path'],
    ];

    /**
     * The credentials pass everything but the admin rule (a plain user, signed in or with a valid
     * key), so each refusal must come from the path rules themselves: 403 admin_required once the
     * path is seen as an admin path, or 400 invalid_request_path when it cannot be judged at all.
     */
    function expectRefusedByPathRule(path: string, answer: { status: number; text: string }): void {
      const code = answer.status === 403 ? 'admin_required' : 'invalid_request_path';
      expect([400, 403], `${path}: ${answer.text}`).toContain(answer.status);
      expect((JSON.parse(answer.text) as { error: { code: string } }).error.code, path).toBe(code);
    }

    it.each(tricks)('never forwards %s (%s) for a plain user’s session: 403 admin_required or 400', async (path) => {
      const before = stack.platform.requests.length;
      expectRefusedByPathRule(path, await sendRequest(stack.url, { path, headers: sessionHeader(stack, ada) }));
      expect(forwardedSince(stack, before)).toEqual([]);
    });

    it.each(tricks)('never forwards %s (%s) for a plain user’s API key: 403 admin_required or 400', async (path) => {
      const before = stack.platform.requests.length;
      expectRefusedByPathRule(
        path,
        await sendRequest(stack.url, { path, headers: { authorization: `Bearer ${adaKey.key}` } }),
      );
      expect(forwardedSince(stack, before)).toEqual([]);
    });

    // The rule sees the normalised path (/public/x) but the platform gets the target verbatim; a
    // platform that routes without resolving dot segments (Fastify, Express, Starlette) serves it
    // from /echo/admin.
    it.each(['/echo/admin/../../public/x', '/echo/admin/..;/..;/public/x', '/echo/admin/%2e%2e/%2e%2e/public/x'])(
      'never lets a public rule carry %s to the platform for a caller who is not signed in',
      async (path) => {
        const before = stack.platform.requests.length;
        const { status } = await sendRequest(stack.url, { path });
        const reached = forwardedSince(stack, before).filter((url) => /^\/+echo\/+admin/i.test(url));
        expect(reached, `answered ${status}`).toEqual([]);
      },
    );

    it('refuses a lowercase method on a raw socket without forwarding it', async () => {
      const before = stack.platform.requests.length;
      const host = new URL(stack.url).host;
      const status = await rawStatus(stack.url, `get /public/lower-method HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      expect(status).toBeGreaterThanOrEqual(400);
      expect(status).toBeLessThan(500);
      expect(forwardedSince(stack, before)).toEqual([]);
      expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
    });
  });

  describe('disabling a user', () => {
    const erin: Person = { sub: 'erin-1', email: 'erin@example.com' };

    it('cuts their open stream within a second, ends their sessions, refuses their key and sign-in; enabling restores them', async () => {
      const browser = await admit(stack, erin);
      const { key } = await issueKey(stack, browser);
      const userId = (await findUser(stack, boss, erin)).id;
      const abortedBefore = stack.platform.abortedStreams();

      const response = await withKey(stack, key, '/slow-stream?chunks=100&delayMs=50');
      expect(response.status).toBe(200);
      const stream = readEvents(response);
      await expect.poll(() => stream.events.length).toBeGreaterThanOrEqual(2);

      const sentAt = Date.now();
      const disable = await boss.fetch(`${stack.url}/v1/auth/admin/users/${userId}/disable`, sameOriginPost(stack));
      const answeredAt = Date.now();
      expect(disable.status).toBe(200);
      expect(await disable.json()).toEqual({ id: userId, disabled: true });
      const ended = await stream.finished;
      // The promise counts from the change, made before the answer; the stream may end before it.
      const cutAfter = Math.max(0, ended.at - answeredAt);
      console.info(
        `policy: stream cut ${ended.at - sentAt} ms after the disable was sent, ${cutAfter} ms after its answer (bound ${PROMISED_WITHIN_MS} ms)`,
      );
      expect(cutAfter).toBeLessThan(PROMISED_WITHIN_MS);
      expect(stream.events.map((event) => event.data)).not.toContain('[DONE]');
      await expect.poll(() => stack.platform.abortedStreams(), { timeout: 1_000 }).toBe(abortedBefore + 1);

      await expectApiError(await browser.fetch(`${stack.url}/v1/auth/me`), 401, 'missing_credentials');
      await expectApiError(await browser.fetch(`${stack.url}/echo/after-disable`), 401, 'missing_credentials');
      await expectApiError(await withKey(stack, key, '/echo/after-disable'), 403, 'account_disabled');
      const refused = await visit(stack, erin);
      expect(refused.callback.status).toBe(403);
      expect(await refused.callback.text()).toMatch(REFUSAL_MESSAGES.user_disabled!);
      expect(refused.browser.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
      expect(await findUser(stack, boss, erin)).toMatchObject({ disabled: true, active_sessions: 0 });

      const enable = await boss.fetch(`${stack.url}/v1/auth/admin/users/${userId}/enable`, sameOriginPost(stack));
      expect(enable.status).toBe(200);
      expect(await enable.json()).toEqual({ id: userId, disabled: false });
      // Within the key cache's one-second bound; the next test asks for at once.
      await expect
        .poll(async () => (await withKey(stack, key, '/echo/after-enable')).status, { timeout: 1_500 })
        .toBe(200);
      await admit(stack, erin);
      await expectApiError(await browser.fetch(`${stack.url}/v1/auth/me`), 401, 'missing_credentials');
    });
  });

  describe('enabling a user', () => {
    it('accepts their API key again at once, as disabling refuses it at once', async () => {
      const grace: Person = { sub: 'grace-1', email: 'grace@example.com' };
      const { key } = await createKey(stack, await admit(stack, grace));
      const userId = (await findUser(stack, boss, grace)).id;
      const base = `${stack.url}/v1/auth/admin/users/${userId}`;
      expect((await boss.fetch(`${base}/disable`, sameOriginPost(stack))).status).toBe(200);
      await expectApiError(await withKey(stack, key, '/echo/disabled'), 403, 'account_disabled');
      expect((await boss.fetch(`${base}/enable`, sameOriginPost(stack))).status).toBe(200);
      const response = await withKey(stack, key, '/echo/enabled');
      expect(response.status, await response.text()).toBe(200);
    });
  });

  describe('admin actions', () => {
    it('revokes any user’s key', async () => {
      const { id, key } = await issueKey(stack, ada);
      expect((await withKey(stack, key, '/echo/before-revoke')).status).toBe(200);
      const response = await boss.fetch(`${stack.url}/v1/auth/admin/keys/${id}/revoke`, sameOriginPost(stack));
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ id, revoked: true });
      await expectApiError(await withKey(stack, key, '/echo/after-revoke'), 401, 'revoked_api_key');
      const listed = await boss.fetch(`${stack.url}/v1/auth/admin/keys`);
      expect(listed.status).toBe(200);
      const text = await listed.text();
      expect(text).not.toContain(key);
      const revokedAt = (JSON.parse(text) as { data: AdminKey[] }).data.find((entry) => entry.id === id)?.revoked_at;
      expect(revokedAt).not.toBeNull();
      expect(Math.abs(new Date(revokedAt!).getTime() - Date.now())).toBeLessThan(10_000);
    });

    it('answers 404 for a key id that does not exist', async () => {
      const response = await boss.fetch(
        `${stack.url}/v1/auth/admin/keys/key_nonexistent/revoke`,
        sameOriginPost(stack),
      );
      await expectApiError(response, 404, 'api_key_not_found');
    });

    it('lets no plain user revoke another’s key or disable a user through the admin routes', async () => {
      const { id, key } = await issueKey(stack, boss);
      const revoke = await ada.fetch(`${stack.url}/v1/auth/admin/keys/${id}/revoke`, sameOriginPost(stack));
      await expectApiError(revoke, 403, 'admin_required');
      expect((await withKey(stack, key, '/echo/still-works')).status).toBe(200);
      const bossId = (await findUser(stack, boss, BOSS)).id;
      const disable = await ada.fetch(`${stack.url}/v1/auth/admin/users/${bossId}/disable`, sameOriginPost(stack));
      await expectApiError(disable, 403, 'admin_required');
      expect((await findUser(stack, boss, BOSS)).disabled).toBe(false);
    });

    it('refuses to let an admin disable their own account (409)', async () => {
      const bossId = (await findUser(stack, boss, BOSS)).id;
      const response = await boss.fetch(`${stack.url}/v1/auth/admin/users/${bossId}/disable`, sameOriginPost(stack));
      await expectApiError(response, 409, 'cannot_disable_self');
      expect((await findUser(stack, boss, BOSS)).disabled).toBe(false);
    });

    it.each([
      ['no Origin', {}],
      ['a foreign Origin', { origin: 'https://evil.example' }],
      ['Origin: null', { origin: 'null' }],
      ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ])('refuses an admin POST carried by the session cookie with %s (403)', async (_label, headers) => {
      const adaId = (await findUser(stack, boss, ADA)).id;
      const { id, key } = await issueKey(stack, ada);
      const disable = await boss.fetch(`${stack.url}/v1/auth/admin/users/${adaId}/disable`, {
        method: 'POST',
        headers,
      });
      await expectApiError(disable, 403, 'cross_origin_request');
      const form = await boss.fetch(`${stack.url}/v1/auth/admin/users/${adaId}/disable`, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
        body: '',
      });
      expect(form.status).toBe(403);
      const revoke = await boss.fetch(`${stack.url}/v1/auth/admin/keys/${id}/revoke`, { method: 'POST', headers });
      await expectApiError(revoke, 403, 'cross_origin_request');
      expect((await findUser(stack, boss, ADA)).disabled).toBe(false);
      expect((await withKey(stack, key, '/echo/not-revoked')).status).toBe(200);
    });

    it('answers the admin page’s form posts with a 303 back to the page', async () => {
      const { id } = await issueKey(stack, ada);
      const response = await boss.fetch(`${stack.url}/v1/auth/admin/keys/${id}/revoke`, {
        method: 'POST',
        headers: { origin: stack.url, 'content-type': 'application/x-www-form-urlencoded' },
        body: '',
      });
      expect(response.status).toBe(303);
      expect(response.headers.get('location')).toBe('/v1/auth/admin');
    });
  });
});

describe('disabling a user whose request waits for the platform', () => {
  const ivy: Person = { sub: 'ivy-1', email: 'ivy@example.com' };
  let stack: FaultyStack;
  /** Takes every request and never answers it: a request sent is in flight until the gateway ends it. */
  let platform: Server;
  let received = 0;
  beforeAll(async () => {
    platform = createServer(() => void received++);
    await new Promise<void>((resolve) => platform.listen(0, '127.0.0.1', resolve));
    const { port } = platform.address() as AddressInfo;
    stack = await startFaultyStack({
      auth: { admin_emails: [BOSS.email], failed_auth_per_minute: 0 },
      gateway: { upstream: `http://127.0.0.1:${port}` },
    });
  });
  afterAll(async () => {
    await stack.close();
    platform.closeAllConnections();
    await new Promise((resolve) => platform.close(resolve));
  });

  it('answers it 403 account_disabled instead of leaving it waiting', async () => {
    const boss = await admit(stack, BOSS);
    const browser = await admit(stack, ivy);
    const { key } = await issueKey(stack, browser);
    const userId = (await findUser(stack, boss, ivy)).id;
    const pending = withKey(stack, key, '/echo/waiting', { signal: AbortSignal.timeout(5 * PROMISED_WITHIN_MS) });
    await expect.poll(() => received).toBe(1);
    const disable = await boss.fetch(`${stack.url}/v1/auth/admin/users/${userId}/disable`, sameOriginPost(stack));
    expect(disable.status).toBe(200);
    await expectApiError(await pending, 403, 'account_disabled');
  });
});

describe('the same email at two providers', () => {
  let first: FaultyStack;
  let second: FaultyStack;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-issuers-'));
    tempDirs.push(dir);
    // Two gateways over one database, each trusting its own provider: one users table, two issuers.
    const database = { url: `sqlite:${join(dir, 'shared.db')}` };
    first = await startFaultyStack({ auth: { admin_emails: [ADA.email] }, database });
    second = await startFaultyStack({ auth: { admin_emails: [ADA.email] }, database });
  });
  afterAll(async () => {
    await first.close();
    await second.close();
  });

  it('are two users, even with the same subject, and disabling one leaves the other signed in', async () => {
    const atFirst = await admit(first, ADA);
    const atSecond = await admit(second, ADA);
    const rows = (await listUsers(first, atFirst)).filter((user) => user.email === ADA.email);
    expect(rows.map((user) => user.issuer).sort()).toEqual([first.provider.issuer, second.provider.issuer].sort());
    expect(rows.every((user) => user.subject === ADA.sub)).toBe(true);
    expect(new Set(rows.map((user) => user.id)).size).toBe(2);

    const other = rows.find((user) => user.issuer === second.provider.issuer)!;
    const disable = await atFirst.fetch(`${first.url}/v1/auth/admin/users/${other.id}/disable`, sameOriginPost(first));
    expect(disable.status).toBe(200);
    expect((await atFirst.fetch(`${first.url}/v1/auth/me`)).status).toBe(200);
    // The second gateway is another process as far as it knows: at the latest, it refuses once its
    // cached session answer, read before the disable, is older than SESSION_CACHE_MS. A request sent
    // past that is answered after it, however slowly the loaded machine runs: none may be served.
    const disabledAt = Date.now();
    let lastServedSentAfter: number | undefined;
    const refusedAfter = await msUntil(
      async () => {
        const sentAfter = Date.now() - disabledAt;
        const status = (await atSecond.fetch(`${second.url}/v1/auth/me`)).status;
        if (status !== 401) lastServedSentAfter = sentAfter;
        return status === 401;
      },
      disabledAt,
      { limitMs: 5 * SESSION_CACHE_MS },
    );
    console.log(
      `policy: the other gateway refused the disabled user's session after ${refusedAfter} ms; the last request ` +
        `it served was sent ${lastServedSentAfter ?? '-'} ms after the disable (bound ${SESSION_CACHE_MS} ms)`,
    );
    expect(refusedAfter, 'the other gateway never refused the disabled user').toBeLessThan(Infinity);
    expect(lastServedSentAfter ?? 0).toBeLessThan(SESSION_CACHE_MS);
    expect((await atFirst.fetch(`${first.url}/v1/auth/me`)).status).toBe(200);
  });
});

describe('the audit log', () => {
  let stack: FaultyStack;
  let since: string;
  let boss: Browserless;
  let ada: Browserless;
  let keyId: string;
  let adaId: string;

  /** The export as text and as parsed lines. */
  async function exportAudit(
    query: string,
    as = boss,
  ): Promise<{ response: Response; text: string; lines: AuditLine[] }> {
    const response = await as.fetch(`${stack.url}/v1/auth/admin/audit?${query}`);
    const text = await response.text();
    const lines =
      text === ''
        ? []
        : text
            .trimEnd()
            .split('\n')
            .map((line) => JSON.parse(line) as AuditLine);
    return { response, text, lines };
  }

  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: { allowed_email_domains: ['example.com'], admin_emails: [BOSS.email] },
      gateway: { admin_paths: ['^/echo/admin'] },
    });
    since = new Date().toISOString();
    boss = await admit(stack, BOSS);
    await refuse(stack, { sub: 'eve-1', email: 'eve@evil.com' }, 'email_domain_not_allowed');
    ada = await admit(stack, ADA);
    const created = await issueKey(stack, ada);
    keyId = created.id;
    expect((await withKey(stack, created.key, '/echo/audited')).status).toBe(200);
    await expectApiError(await ada.fetch(`${stack.url}/echo/admin`), 403, 'admin_required');
    const revoke = await boss.fetch(`${stack.url}/v1/auth/admin/keys/${keyId}/revoke`, sameOriginPost(stack));
    expect(revoke.status).toBe(200);
    const remove = await ada.fetch(`${stack.url}/v1/auth/api-keys/${keyId}/remove`, sameOriginPost(stack));
    expect(remove.status).toBe(204);
    adaId = (await findUser(stack, boss, ADA)).id;
    for (const action of ['disable', 'enable']) {
      const response = await boss.fetch(`${stack.url}/v1/auth/admin/users/${adaId}/${action}`, sameOriginPost(stack));
      expect(response.status).toBe(200);
    }
    ada = await admit(stack, ADA);
    const signOut = await ada.fetch(`${stack.url}/v1/auth/logout`, sameOriginPost(stack));
    expect(signOut.status).toBe(302);
    // Entries are written to the database after the answer; wait for the last one.
    const written = await msUntil(async () => (await exportAudit('event=sign_out')).lines.length > 0, Date.now(), {
      limitMs: 2_000,
    });
    expect(written, 'the sign-out entry was written').toBeLessThan(2_000);
  });
  afterAll(() => stack.close());

  it('exports JSON lines, oldest first, as application/x-ndjson', async () => {
    const { response, text, lines } = await exportAudit(`since=${encodeURIComponent(since)}`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(text.endsWith('\n')).toBe(true);
    const times = lines.map((line) => Date.parse(line.at));
    expect(times.every((at) => at >= Date.parse(since))).toBe(true);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    expect(times.at(-1)!).toBeGreaterThan(times[0]!);
    // Sorted, since two entries of the same millisecond may come in either order.
    expect(lines.map((line) => line.event).sort()).toEqual([...AUDIT_EVENTS, 'sign_in', 'sign_in'].sort());
    expect(lines[0]).toMatchObject({ event: 'sign_in', actor_email: BOSS.email });
    expect(lines.at(-1)).toMatchObject({ event: 'sign_out', actor_email: ADA.email });
  });

  it('records who, what and why for each event', async () => {
    const { lines } = await exportAudit(`since=${encodeURIComponent(since)}`);
    const one = (event: string) => lines.find((line) => line.event === event)!;
    expect(one('sign_in')).toMatchObject({ actor_email: BOSS.email, detail: { role: 'admin' } });
    expect(one('sign_in_failed')).toMatchObject({
      actor_email: 'eve@evil.com',
      detail: { reason: 'email_domain_not_allowed' },
    });
    expect(one('key_created')).toMatchObject({ actor_email: ADA.email });
    expect(one('request_denied')).toMatchObject({
      actor_email: ADA.email,
      target: '/echo/admin',
      detail: { reason: 'admin_required', status: 403 },
    });
    expect(one('key_revoked')).toMatchObject({ actor_email: BOSS.email, target: keyId, detail: { by: 'admin' } });
    expect(one('user_disabled')).toMatchObject({
      actor_email: BOSS.email,
      target: ADA.email,
      detail: { user_id: adaId },
    });
    expect(one('user_enabled')).toMatchObject({ actor_email: BOSS.email, target: ADA.email });
    expect(one('sign_out')).toMatchObject({ actor_email: ADA.email });
    for (const line of lines) {
      expect(line.id).toEqual(expect.any(String));
      expect(line.client_address).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
    }
  });

  it('filters by event', async () => {
    const { lines } = await exportAudit(`since=${encodeURIComponent(since)}&event=sign_in`);
    expect(lines.map((line) => line.actor_email)).toEqual([BOSS.email, ADA.email, ADA.email]);
  });

  it('filters by actor', async () => {
    const { lines } = await exportAudit(`since=${encodeURIComponent(since)}&actor=${encodeURIComponent(ADA.email)}`);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.every((line) => line.actor_email === ADA.email)).toBe(true);
    expect(lines.map((line) => line.event).sort()).toEqual(
      ['sign_in', 'key_created', 'request_denied', 'key_removed', 'sign_in', 'sign_out'].sort(),
    );
  });

  it('accepts since as milliseconds, and exports nothing from the future', async () => {
    const iso = await exportAudit(`since=${encodeURIComponent(since)}`);
    expect((await exportAudit(`since=${Date.parse(since)}`)).lines).toEqual(iso.lines);
    const future = await exportAudit(`since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`);
    expect(future.response.status).toBe(200);
    expect(future.text).toBe('');
  });

  it('refuses a since that is not a time with 400', async () => {
    await expectApiError(await boss.fetch(`${stack.url}/v1/auth/admin/audit?since=yesterday`), 400, 'invalid_since');
  });

  it('is for admins only', async () => {
    const plain = await admit(stack, { sub: 'frank-1', email: 'frank@example.com' });
    await expectApiError(await plain.fetch(`${stack.url}/v1/auth/admin/audit`), 403, 'admin_required');
    await expectApiError(await fetch(`${stack.url}/v1/auth/admin/audit`), 401, 'missing_credentials');
  });

  it('writes each entry to the log as "audit: <event>"', () => {
    const messages = stack.logs.join('');
    for (const event of AUDIT_EVENTS) expect(messages).toContain(`"msg":"audit: ${event}"`);
    expect(loggedAudits(stack, 'sign_in_failed')).toEqual([
      expect.objectContaining({ actor_email: 'eve@evil.com', detail: { reason: 'email_domain_not_allowed' } }),
    ]);
  });

  it('holds no secret: no key, client secret, session or ID token in the export or the log', async () => {
    const { text } = await exportAudit('');
    const log = stack.logs.join('');
    expect(secrets.length).toBeGreaterThan(5);
    for (const secret of [...secrets, CLIENT_SECRET]) {
      expect(text).not.toContain(secret);
      expect(log).not.toContain(secret);
    }
    for (const idToken of secrets.filter((secret) => secret.split('.').length === 3)) {
      expect(log).not.toContain(idToken.split('.')[2]);
    }
  });
});

describe('forward-auth at /v1/auth/check', () => {
  const rules = { public_paths: ['^/public/'], admin_paths: ['^/echo/admin'] };
  const carol: Person = { sub: 'carol-1', email: 'carol@example.com', claims: { groups: ['staff', 'llm-users'] } };

  describe('behind a trusted proxy (trusted_proxies: [127.0.0.1, ::1])', () => {
    let stack: FaultyStack;
    let boss: Browserless;
    let plain: Browserless;
    beforeAll(async () => {
      stack = await startFaultyStack({
        auth: { admin_emails: [BOSS.email] },
        gateway: { ...rules, trusted_proxies: ['127.0.0.1', '::1'] },
      });
      boss = await admit(stack, BOSS);
      plain = await admit(stack, carol);
    });
    afterAll(() => stack.close());

    it('answers 200 with the identity headers for a session', async () => {
      const response = await plain.fetch(`${stack.url}/v1/auth/check`);
      expect(response.status).toBe(200);
      expect(response.headers.get('cache-control')).toBe('no-store');
      expect(response.headers.get('x-forwarded-user')).toBe(carol.sub);
      expect(response.headers.get('x-forwarded-email')).toBe(carol.email);
      expect(response.headers.get('x-forwarded-groups')).toBe('staff,llm-users');
      expect(response.headers.get('x-forwarded-key-id')).toBeNull();
    });

    it('answers 200 with the identity headers and the key id for an API key', async () => {
      const { id, key } = await issueKey(stack, plain);
      const response = await withKey(stack, key, '/v1/auth/check');
      expect(response.status).toBe(200);
      expect(response.headers.get('x-forwarded-user')).toBe(carol.sub);
      expect(response.headers.get('x-forwarded-email')).toBe(carol.email);
      expect(response.headers.get('x-forwarded-groups')).toBe('staff,llm-users');
      expect(response.headers.get('x-forwarded-key-id')).toBe(id);
    });

    it('answers 401 with a Bearer challenge without credentials', async () => {
      const response = await fetch(`${stack.url}/v1/auth/check`, { headers: { accept: 'text/html' } });
      expect(response.headers.get('www-authenticate')).toMatch(/^Bearer/);
      await expectApiError(response, 401, 'missing_credentials');
    });

    it.each(['x-forwarded-uri', 'x-original-uri'])(
      'believes %s naming a public path: 200 without sign-in',
      async (name) => {
        const response = await fetch(`${stack.url}/v1/auth/check`, { headers: { [name]: '/public/x?y=1' } });
        expect(response.status).toBe(200);
        expect(response.headers.get('x-forwarded-user')).toBeNull();
      },
    );

    it('refuses an admin path named by X-Forwarded-Uri to a plain user (403) and allows it to an admin', async () => {
      await expectApiError(
        await plain.fetch(`${stack.url}/v1/auth/check`, { headers: { 'x-forwarded-uri': '/echo/admin/x' } }),
        403,
        'admin_required',
      );
      const response = await boss.fetch(`${stack.url}/v1/auth/check`, {
        headers: { 'x-forwarded-uri': '/echo/admin/x' },
      });
      expect(response.status).toBe(200);
      expect(response.headers.get('x-forwarded-user')).toBe(BOSS.sub);
    });

    it.each(['/public/../echo/admin', '/public/%2e%2e/echo/admin', '/public/..;/echo/admin', '/ECHO/admin'])(
      'refuses X-Forwarded-Uri %s, which resolves to the admin path, to a plain user and to no one (403/401 or 400)',
      async (uri) => {
        const headers = { 'x-forwarded-uri': uri };
        expect([400, 403]).toContain((await plain.fetch(`${stack.url}/v1/auth/check`, { headers })).status);
        expect([400, 401]).toContain((await fetch(`${stack.url}/v1/auth/check`, { headers })).status);
      },
    );

    it.each(['/echo/admin/../../public/x', '/echo/admin/%2e%2e/%2e%2e/public/x'])(
      'does not let the public rule answer 200 for X-Forwarded-Uri %s when not signed in',
      async (uri) => {
        const response = await fetch(`${stack.url}/v1/auth/check`, { headers: { 'x-forwarded-uri': uri } });
        expect([400, 401]).toContain(response.status);
      },
    );

    it('refuses an X-Forwarded-Uri that cannot be normalised with 400', async () => {
      for (const uri of ['/echo/admin%23', '/echo/%2561dmin', '/../public/x', 'public/x']) {
        await expectApiError(
          await fetch(`${stack.url}/v1/auth/check`, { headers: { 'x-forwarded-uri': uri } }),
          400,
          'invalid_request_path',
        );
      }
    });

    it('refuses a cross-origin POST named by X-Forwarded-Method when the session carries it', async () => {
      const headers = { 'x-forwarded-uri': '/echo/x', 'x-forwarded-method': 'POST', origin: 'https://evil.example' };
      await expectApiError(await plain.fetch(`${stack.url}/v1/auth/check`, { headers }), 403, 'cross_origin_request');
      const same = { ...headers, origin: stack.url };
      expect((await plain.fetch(`${stack.url}/v1/auth/check`, { headers: same })).status).toBe(200);
    });
  });

  describe('with no trusted proxies', () => {
    let stack: FaultyStack;
    let plain: Browserless;
    beforeAll(async () => {
      stack = await startFaultyStack({ gateway: rules });
      plain = await admit(stack, carol);
    });
    afterAll(() => stack.close());

    it.each(['x-forwarded-uri', 'x-original-uri'])(
      'ignores %s naming a public path: 401 without sign-in',
      async (name) => {
        const response = await fetch(`${stack.url}/v1/auth/check`, {
          headers: { [name]: '/public/x', 'x-forwarded-for': '127.0.0.1' },
        });
        await expectApiError(response, 401, 'missing_credentials');
      },
    );

    it('still answers a session with 200 and its identity headers', async () => {
      const response = await plain.fetch(`${stack.url}/v1/auth/check`, { headers: { 'x-forwarded-uri': '/public/x' } });
      expect(response.status).toBe(200);
      expect(response.headers.get('x-forwarded-user')).toBe(carol.sub);
      expect(response.headers.get('x-forwarded-groups')).toBe('staff,llm-users');
    });
  });
});
