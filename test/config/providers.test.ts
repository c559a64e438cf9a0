import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, redactConfig, signInSettingsOf } from '../../src/config/index.js';
import { SECRETS, editsYaml, loadError, removeEditsFiles, writeEditsFile } from './fixtures.js';

afterAll(removeEditsFiles);

/** Two providers with what each needs, plus `changes` merged into each in turn. */
function twoProviders(...changes: Array<Record<string, unknown>>) {
  const base = [
    {
      id: 'corp',
      name: 'Corporate SSO',
      client_id: 'gatehouse-corp',
      client_secret: SECRETS.client,
      server_metadata_url: 'https://sso.example.com/.well-known/openid-configuration',
    },
    {
      id: 'partners',
      name: 'Partner accounts',
      client_id: 'gatehouse-partners',
      client_secret: 'partners-secret-91c4',
      server_metadata_url: 'https://partners.example.org/.well-known/openid-configuration',
    },
  ];
  return base.map((provider, i) => ({ ...provider, ...changes[i] }));
}

function loadProviders(providers: unknown, extra: Record<string, unknown> = {}) {
  return loadConfig(writeEditsFile(yamlWith(providers, extra)), {});
}

function problemsOf(text: string): string[] {
  return loadError(text).message.split('\n  - ').slice(1);
}

/** MINIMAL without auth_provider, with `auth_providers` and the other sections given. */
function yamlWith(providers: unknown, extra: Record<string, unknown> = {}): string {
  return editsYaml({ ...extra, auth_providers: providers }).replace(/^auth_provider:\n( {2}.*\n)+/m, '');
}

describe('auth_providers', () => {
  it('reads each provider with the defaults of auth_provider and the rules of auth where it sets none', () => {
    const config = loadProviders(
      twoProviders({ allowed_email_domains: ['Example.COM'], groups_claim: 'roles' }, { scopes: ['openid', 'email'] }),
      { auth: { admin_emails: ['boss@example.com'] } },
    );
    const settings = signInSettingsOf(config)!;
    expect(settings.providers.map((provider) => [provider.id, provider.name, provider.shorthand])).toEqual([
      ['corp', 'Corporate SSO', false],
      ['partners', 'Partner accounts', false],
    ]);
    const [corp, partners] = settings.providers;
    expect(corp).toMatchObject({
      scopes: ['openid', 'email', 'profile'],
      groups_claim: 'roles',
      allowed_email_domains: ['example.com'],
      admin_emails: ['boss@example.com'],
      require_email: true,
      allow_insecure_http: false,
    });
    expect(partners).toMatchObject({
      scopes: ['openid', 'email'],
      groups_claim: 'groups',
      allowed_email_domains: [],
      admin_emails: ['boss@example.com'],
      // auth.admin_emails is an email rule, so auth.require_email follows it.
      require_email: true,
    });
  });

  it('keeps the single auth_provider as a list of one with id default', () => {
    const settings = signInSettingsOf(loadConfig(writeEditsFile(editsYaml()), {}))!;
    expect(settings.providers).toHaveLength(1);
    expect(settings.providers[0]).toMatchObject({
      id: 'default',
      name: 'id.example.com',
      shorthand: true,
      client_id: 'gatehouse',
    });
  });

  it('refuses auth_provider and auth_providers together, naming both keys', () => {
    const text = editsYaml({ auth_providers: twoProviders() });
    expect(problemsOf(text)).toContain(
      'auth_provider and auth_providers are both set: write one provider as auth_provider, or several as ' +
        'auth_providers; move the keys of auth_provider into an item of auth_providers (with an id and a name) ' +
        'and delete auth_provider',
    );
  });

  it('refuses a duplicate id, naming both positions', () => {
    expect(problemsOf(yamlWith(twoProviders({}, { id: 'corp' })))).toEqual([
      'auth_providers[1].id is "corp", already the id of auth_providers[0]: each provider needs its own id (it names its callback URL)',
    ]);
  });

  it('refuses two providers with one discovery document, saying why', () => {
    const url = 'https://sso.example.com/.well-known/openid-configuration';
    expect(problemsOf(yamlWith(twoProviders({}, { server_metadata_url: url })))).toEqual([
      `auth_providers[1].server_metadata_url is "${url}", already the server_metadata_url of auth_providers[0]: ` +
        'users are keyed by issuer and subject, so two clients at one provider would share users; configure it once',
    ]);
  });

  it('refuses an id that cannot be a URL segment, and a missing name and secret, per item', () => {
    const problems = problemsOf(
      yamlWith(twoProviders({ id: 'Corp SSO' }, { name: null, client_secret: null, server_metadata_url: 'ftp://x' })),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        'auth_providers[0].id must be a slug of 1 to 32 lowercase letters, digits and - (e.g. google), used in /v1/auth/auth/<id>, got "Corp SSO"',
        'auth_providers[1].name is missing (expected a display name of at most 80 characters for the sign-in chooser (e.g. Google))',
        'auth_providers[1].client_secret is missing (expected a non-empty string)',
        expect.stringMatching(
          /^auth_providers\[1\]\.server_metadata_url must be the http\(s\) URL of the discovery document/,
        ),
      ]),
    );
  });

  it('suggests the key meant for a misspelt item key', () => {
    expect(problemsOf(yamlWith(twoProviders({ client_secrt: 'x' })))).toContain(
      'auth_providers[0].client_secrt is not a known key (did you mean auth_providers[0].client_secret?)',
    );
  });

  it('never shows a provider secret in a message', () => {
    const message = loadError(yamlWith(twoProviders({ client_secret: [SECRETS.client] }))).message;
    expect(message).toContain('auth_providers[0].client_secret must be a non-empty string, got a list');
    expect(message).not.toContain(SECRETS.client);
  });

  it('requires https for each discovery URL unless that provider allows http', () => {
    const insecure = 'http://sso.example.com/.well-known/openid-configuration';
    expect(problemsOf(yamlWith(twoProviders({}, { server_metadata_url: insecure })))).toEqual([
      `auth_providers[1].server_metadata_url must use https, got "${insecure}": plain http is allowed only for a ` +
        'loopback host (localhost, 127.0.0.0/8, ::1) or with auth_providers[1].allow_insecure_http: true',
    ]);
    const allowed = loadProviders(twoProviders({}, { server_metadata_url: insecure, allow_insecure_http: true }));
    expect(allowed.auth_providers?.[1]?.server_metadata_url).toBe(insecure);
  });

  it('refuses an empty list and a list item that is not a mapping', () => {
    expect(problemsOf(yamlWith([]))).toEqual([
      'auth_providers must be a list of providers, each a mapping with id, name, client_id, client_secret and server_metadata_url, got a list []',
    ]);
    expect(problemsOf(yamlWith(['corp']))).toEqual([
      'auth_providers[0] must be a mapping with id, name, client_id, client_secret and server_metadata_url, got "corp"',
    ]);
  });

  it('names the unset variable of one provider without complaining about its value too', () => {
    const { message } = loadError(yamlWith(twoProviders({}, { client_secret: '${PARTNER_SECRET}' })));
    expect(message.split('\n  - ').slice(1)).toEqual([
      'auth_providers[1].client_secret uses ${PARTNER_SECRET}, but the environment variable PARTNER_SECRET is not set',
    ]);
  });

  it('redacts every provider secret in config check output', () => {
    const redacted = redactConfig(loadProviders(twoProviders())) as {
      auth_providers: Array<{ client_secret: string }>;
    };
    expect(redacted.auth_providers.map((provider) => provider.client_secret)).toEqual(['***', '***']);
    expect(JSON.stringify(redacted)).not.toContain(SECRETS.client);
    // The unused shorthand, all defaults, would only confuse the reader.
    expect(redacted).not.toHaveProperty('auth_provider');
  });
});
