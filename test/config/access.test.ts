import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { editsYaml, loadError, removeEditsFiles, writeEditsFile } from './fixtures.js';

afterAll(removeEditsFiles);

const load = (changes: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) =>
  loadConfig(writeEditsFile(editsYaml(changes)), env);

/** The problem lines of the rejection, without the file line. */
function problems(changes: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): string[] {
  const { message } = loadError(editsYaml(changes), env);
  return message.split('\n  - ').slice(1);
}

describe('access keys: auth', () => {
  it('lowercases allowed domains and drops one trailing dot', () => {
    const config = load({ auth: { allowed_email_domains: ['Example.COM', '.Corp.Example.com.'] } });
    expect(config.auth.allowed_email_domains).toEqual(['example.com', '.corp.example.com']);
  });

  it('merges the legacy google_whitelist, one domain or a list, into allowed_email_domains', () => {
    const one = load({ auth: { allowed_email_domains: ['example.com'], google_whitelist: 'Lamini.AI' } });
    expect(one.auth.allowed_email_domains).toEqual(['example.com', 'lamini.ai']);
    const many = load({ auth: { google_whitelist: ['lamini.ai', 'example.com', 'LAMINI.ai'] } });
    expect(many.auth.allowed_email_domains).toEqual(['lamini.ai', 'example.com']);
  });

  it('reads an emptied key as its default', () => {
    const config = load({ auth: { google_whitelist: null, allowed_groups: null } });
    expect(config.auth.allowed_email_domains).toEqual([]);
    expect(config.auth.allowed_groups).toEqual([]);
  });

  it('rejects entries that are not domain names, one line per entry naming its index', () => {
    const entries = [
      'example.com',
      'user@example.com',
      'https://example.com',
      'example .com',
      'localhost',
      '.com',
      'ex\u0430mple.com',
      '',
    ];
    const lines = problems({ auth: { allowed_email_domains: entries } });
    const expected = (index: number, shown: string) =>
      `auth.allowed_email_domains[${index}] must be a domain name such as example.com, or .example.com for its ` +
      `subdomains (ASCII letters, digits, - and dots; write an internationalised domain as xn--), got ${shown}`;
    expect(lines).toEqual(
      [
        expected(1, '"user@example.com"'),
        expected(2, '"https://example.com"'),
        expected(3, '"example .com"'),
        expected(4, '"localhost"'),
        expected(5, '".com"'),
        expected(6, '"ex\u0430mple.com"'),
        expected(7, '""'),
      ].sort(),
    );
  });

  it('names a bad single-string google_whitelist by its key alone', () => {
    expect(problems({ auth: { google_whitelist: '@lamini.ai' } })).toEqual([
      expect.stringMatching(/^auth\.google_whitelist must be a domain name .*, got "@lamini\.ai"$/),
    ]);
  });

  it('reads allow_unverified_email as a boolean', () => {
    expect(load({ auth: { allow_unverified_email: 'true' } }).auth.allow_unverified_email).toBe(true);
    expect(problems({ auth: { allow_unverified_email: 'sometimes' } })).toEqual([
      'auth.allow_unverified_email must be true or false, got "sometimes"',
    ]);
  });

  it('lowercases admin emails and rejects what is not an address', () => {
    const config = load({ auth: { admin_emails: ['Root@Example.com'] } });
    expect(config.auth.admin_emails).toEqual(['root@example.com']);
    expect(problems({ auth: { admin_emails: ['root'] } })).toEqual([
      'auth.admin_emails must be a list of email addresses, got a list ["root"]',
    ]);
  });

  it('keeps group names exactly as written and rejects empty ones', () => {
    const config = load({ auth: { allowed_groups: ['LLM Users', '/engineering'], admin_groups: ['a1b2-c3'] } });
    expect(config.auth.allowed_groups).toEqual(['LLM Users', '/engineering']);
    expect(config.auth.admin_groups).toEqual(['a1b2-c3']);
    expect(problems({ auth: { admin_groups: ['ok', ''] } })).toEqual([
      'auth.admin_groups must be a list of non-empty group names, got a list ["ok",""]',
    ]);
    expect(problems({ auth: { allowed_groups: 'admins' } })).toEqual([
      'auth.allowed_groups must be a list of non-empty group names, got "admins"',
    ]);
  });
});

describe('access keys: auth_provider.groups_claim', () => {
  it('accepts a claim name, a dotted path and a URL claim name', () => {
    for (const claim of [
      'roles',
      'realm_access.roles',
      'resource_access.gatehouse.roles',
      'https://example.com/groups',
    ]) {
      expect(load({ auth_provider: { groups_claim: claim } }).auth_provider.groups_claim).toBe(claim);
    }
  });

  it('rejects an empty path, empty segments and whitespace', () => {
    for (const claim of ['', '.groups', 'groups.', 'realm_access..roles', 'my groups', 'groups\n']) {
      expect(problems({ auth_provider: { groups_claim: claim } }), JSON.stringify(claim)).toEqual([
        `auth_provider.groups_claim must be a claim name or a dotted path to one (e.g. groups or realm_access.roles), got ${JSON.stringify(claim)}`,
      ]);
    }
  });
});

describe('access keys: gateway paths and proxies', () => {
  it('accepts regular expressions and keeps them as written', () => {
    const config = load({ gateway: { public_paths: ['^/health$', '^/static/'], admin_paths: ['^/admin(/|$)'] } });
    expect(config.gateway.public_paths).toEqual(['^/health$', '^/static/']);
    expect(config.gateway.admin_paths).toEqual(['^/admin(/|$)']);
  });

  it('rejects a pattern that does not compile, naming the key, the index and the reason', () => {
    expect(problems({ gateway: { public_paths: ['^/ok$', '(', '[a-'] } })).toEqual([
      'gateway.public_paths[1] is not a valid regular expression: /(/u: Unterminated group',
      'gateway.public_paths[2] is not a valid regular expression: /[a-/u: Unterminated character class',
    ]);
    expect(problems({ gateway: { admin_paths: ['(?i)^/admin'] } })).toEqual([
      'gateway.admin_paths[0] is not a valid regular expression: /(?i)^/admin/u: Invalid group',
    ]);
  });

  it('rejects an empty pattern, which would match every path', () => {
    expect(problems({ gateway: { public_paths: [''] } })).toEqual([
      'gateway.public_paths[0] is empty, which would match every path',
    ]);
  });

  it('reports a pattern only once when an unset variable is the cause', () => {
    expect(problems({ gateway: { admin_paths: ['${ADMIN_PREFIX}('] } })).toEqual([
      'gateway.admin_paths[0] uses ${ADMIN_PREFIX}, but the environment variable ADMIN_PREFIX is not set',
    ]);
  });

  it('accepts IPv4 and IPv6 addresses and CIDR blocks as trusted proxies', () => {
    const proxies = ['10.0.0.0/8', '192.168.1.7', '0.0.0.0/0', '::1', 'fd00::/8', '2001:db8::/32', '::ffff:10.0.0.1'];
    expect(load({ gateway: { trusted_proxies: proxies } }).gateway.trusted_proxies).toEqual(proxies);
  });

  it('rejects trusted proxies that are not addresses or CIDR blocks', () => {
    const bad = [
      '10.0.0.0/33',
      '10.0.0/8',
      'fd00::/129',
      'localhost',
      '10.0.0.0/',
      '1.2.3.4/8/9',
      'fe80::1%eth0',
      '10.0.0.1/-1',
    ];
    const lines = problems({ gateway: { trusted_proxies: ['127.0.0.1', ...bad] } });
    expect(lines).toEqual(
      bad
        .map(
          (value, index) =>
            `gateway.trusted_proxies[${index + 1}] must be an IP address or a CIDR block (e.g. 10.0.0.0/8 or fd00::/8), got "${value}"`,
        )
        .sort(),
    );
  });
});
