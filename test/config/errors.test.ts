import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { ConfigError } from '../../src/errors.js';
import { SECRETS, editsYaml, loadError, removeEditsFiles, writeEditsFile } from './fixtures.js';

afterAll(removeEditsFiles);

/** Loads the text and checks the message: the file first, then each expected line. */
function expectRejected(text: string, lines: string[], env: NodeJS.ProcessEnv = {}): string {
  const { path, message } = loadError(text, env);
  expect(message.startsWith(`${path}: invalid configuration\n`)).toBe(true);
  for (const line of lines) expect(message).toContain(`\n  - ${line}`);
  return message;
}

const HTTPS_RULE =
  'plain http is allowed only for a loopback host (localhost, 127.0.0.0/8, ::1) or with auth_provider.allow_insecure_http: true';

describe('loadConfig rejects', () => {
  it('a missing file, naming it and how to pass another', () => {
    const path = writeEditsFile('') + '.absent';
    expect(() => loadConfig(path, {})).toThrow(ConfigError);
    expect(() => loadConfig(path, {})).toThrow(
      `${path}: configuration file not found; create it, or pass another with --config FILE or GATEHOUSE_CONFIG`,
    );
  });

  it('a YAML syntax error, with line and column but not the offending line', () => {
    const text = `gateway:\n  upstream: http://127.0.0.1:8000\nauth_provider:\n  client_secret: "${SECRETS.client}\n  client_id: x\n`;
    const { path, message } = loadError(text);
    expect(message).toMatch(new RegExp(`^${path}: YAML syntax error at line \\d+, column \\d+: `));
    expect(message).not.toContain(SECRETS.client);
  });

  it('an unclosed flow list at the right line', () => {
    const { path, message } = loadError('auth:\n  disable_auth: true\ngateway:\n  port: [1,\n  host: x\n');
    expect(message).toContain(`${path}: YAML syntax error at line 5, column 3`);
  });

  it('an unknown key, suggesting the close one', () => {
    expectRejected(editsYaml({ auth: { disabel_auth: true } }), [
      'auth.disabel_auth is not a known key (did you mean auth.disable_auth?)',
    ]);
  });

  it('unknown keys in other sections, listing the known keys when none is close', () => {
    expectRejected(editsYaml({ gateway: { upstream_apikey: 'k', timeout: 3 } }), [
      'gateway.upstream_apikey is not a known key (did you mean gateway.upstream_api_key?)',
      'gateway.timeout is not a known key (known keys in gateway: host, port, upstream, upstream_api_key, data_dir, ' +
        'public_paths, admin_paths, trusted_proxies, log_level, access_log, metrics_port, metrics_host, metrics_models, ' +
        'shutdown_grace_seconds, upstream_headers_timeout_seconds, upstream_idle_timeout_seconds, ' +
        'forward_auth_skip_body_controls, max_checked_body_mb, strip_headers, upstream_cookies, workers)',
    ]);
    expectRejected(editsYaml({ auth_provider: { client_secrt: 'x' } }), [
      'auth_provider.client_secrt is not a known key (did you mean auth_provider.client_secret?)',
    ]);
  });

  it('an upstream ending in /v1, naming the doubled path and the root URL to write instead', () => {
    expectRejected(editsYaml({ gateway: { upstream: 'http://vllm.internal:8000/v1/' } }), [
      'gateway.upstream must be the platform\'s root URL, without /v1, got "http://vllm.internal:8000/v1": the ' +
        "gateway appends the client's whole path, so /v1/chat/completions would reach the platform as " +
        '/v1/v1/chat/completions; write http://vllm.internal:8000',
    ]);
    const { message } = loadError(editsYaml({ gateway: { upstream: 'https://llm.internal/openai/v1' } }));
    expect(message).toContain(
      'would reach the platform as /openai/v1/v1/chat/completions; write https://llm.internal/openai',
    );
  });

  it('a misspelt Gatehouse section, with the section it was meant to be', () => {
    const message = expectRejected(
      `${editsYaml()}gatway:\n  port: 80\nredsi:\n  url: redis://r\nAuth:\n  admin_emails: [a@b.c]\n` +
        `auth-provider:\n  scopes: [openid]\ndatabse:\n  url: x\n`,
      [
        "gatway is not a Gatehouse section (did you mean gateway?); its keys are ignored as the platform's, so rename it to gateway",
        'redsi is not a Gatehouse section (did you mean redis?)',
        'Auth is not a Gatehouse section (did you mean auth?)',
        'auth-provider is not a Gatehouse section (did you mean auth_provider?)',
        'databse is not a Gatehouse section (did you mean database?)',
      ],
    );
    expect(message.split('\n')).toHaveLength(6);
  });

  it('wrong types, including YAML 1.1 yes/no which are strings in YAML 1.2', () => {
    expectRejected(editsYaml({ auth: { disable_auth: 'yes', session_max_hours: 'a week' } }), [
      'auth.disable_auth must be true or false, got "yes"',
      'auth.session_max_hours must be an integer of at least 1, got "a week"',
    ]);
  });

  it('a port out of range or not a number', () => {
    expectRejected(editsYaml({ gateway: { port: 70000 } }), [
      'gateway.port must be an integer from 0 to 65535, got 70000',
    ]);
    expectRejected(editsYaml({ gateway: { port: 'abc' } }), [
      'gateway.port must be an integer from 0 to 65535, got "abc"',
    ]);
  });

  it('a missing client_secret while auth is enabled', () => {
    expectRejected(editsYaml({ auth_provider: { client_secret: null } }), [
      'auth_provider.client_secret is missing (required unless auth.disable_auth is true)',
    ]);
  });

  it('an empty file, listing every required key', () => {
    expectRejected('', [
      'auth_provider.client_id is missing (required unless auth.disable_auth is true)',
      'auth_provider.client_secret is missing (required unless auth.disable_auth is true)',
      'auth_provider.server_metadata_url is missing (required unless auth.disable_auth is true)',
      'powerml.website is missing (required unless auth.disable_auth is true)',
      'gateway.upstream is missing (expected the http(s) base URL of the platform (e.g. http://127.0.0.1:8000))',
    ]);
  });

  it('an unset environment variable, naming it and the key', () => {
    const text = editsYaml({ auth_provider: { client_secret: 'prefix-${OIDC_SECRET}' } });
    const message = expectRejected(
      text,
      ['auth_provider.client_secret uses ${OIDC_SECRET}, but the environment variable OIDC_SECRET is not set'],
      { OTHER: 'unrelated-value' },
    );
    expect(message).not.toContain('prefix-');
    expect(message.split('\n')).toHaveLength(2);
  });

  it('an unset variable inside a list, naming the item', () => {
    expectRejected(editsYaml({ auth_provider: { scopes: ['openid', '${EXTRA_SCOPE}'] } }), [
      'auth_provider.scopes[1] uses ${EXTRA_SCOPE}, but the environment variable EXTRA_SCOPE is not set',
    ]);
  });

  it('an http discovery URL on a non-loopback host', () => {
    const url = 'http://id.example.com/.well-known/openid-configuration';
    expectRejected(editsYaml({ auth_provider: { server_metadata_url: url } }), [
      `auth_provider.server_metadata_url must use https, got "${url}": ${HTTPS_RULE}`,
    ]);
  });

  it('an http website on a non-loopback host, even one that only looks local', () => {
    for (const host of ['llm.example.com', '10.0.0.1', 'localhost.example.com', '128.0.0.1']) {
      expectRejected(editsYaml({ powerml: { website: `http://${host}` } }), [
        `powerml.website must use https, got "http://${host}": ${HTTPS_RULE}`,
      ]);
    }
  });

  it('a website that is not a base URL', () => {
    const expected = 'an absolute http(s) URL without query or fragment (e.g. https://llm.example.com)';
    for (const website of ['https://llm.example.com/?a=1', 'llm.example.com', 'ftp://llm.example.com']) {
      expectRejected(editsYaml({ powerml: { website } }), [`powerml.website must be ${expected}, got "${website}"`]);
    }
  });

  it('scopes without openid', () => {
    expectRejected(editsYaml({ auth_provider: { scopes: ['email', 'profile'] } }), [
      'auth_provider.scopes must be a list of scope names that includes openid, got a list ["email","profile"]',
    ]);
  });

  it('an api_key_prefix outside lowercase letters/digits ending in _', () => {
    for (const prefix of ['GTH_', 'gth', 'g_', '1ab_', 'abcdefghijk_']) {
      expectRejected(editsYaml({ auth: { api_key_prefix: prefix } }), [
        `auth.api_key_prefix must be a lowercase letter, then 1 to 9 lowercase letters or digits, then _ (e.g. "gth_"), got "${prefix}"`,
      ]);
    }
  });

  it('a test_token without test_token_email', () => {
    const message = expectRejected(editsYaml({ auth: { test_token: SECRETS.token } }), [
      'auth.test_token_email is missing (required when auth.test_token is set)',
    ]);
    expect(message).not.toContain(SECRETS.token);
  });

  it('an owned section that is not a mapping', () => {
    expectRejected(editsYaml({ auth: 'yes', redis: ['redis://cache'] }), [
      'auth must be a mapping of keys, got "yes"',
      'redis must be a mapping of keys, got a list ["redis://cache"]',
    ]);
  });

  it('a top level that is not a mapping', () => {
    const { path, message } = loadError('- auth\n- gateway\n');
    expect(message).toBe(
      `${path}: invalid configuration\n  - the top level must be a mapping of sections ` +
        '(auth, powerml, auth_provider, auth_providers, gateway, database, redis, scim, budgets), got a list',
    );
  });

  it('a database URL with an unknown scheme, without echoing its password', () => {
    const url = `mysql://gatehouse:${SECRETS.dbPassword}@db/gatehouse`;
    const message = expectRejected(editsYaml({ database: { url } }), [
      'database.url must be sqlite:PATH, sqlite::memory: or a postgres:// or postgresql:// URL, got "mysql://gatehouse:***@db/gatehouse"',
    ]);
    expect(message).not.toContain(SECRETS.dbPassword);
  });

  it('secrets of the wrong type or length, by their type only', () => {
    const message = expectRejected(
      editsYaml({
        auth_provider: { client_secret: 918273645546 },
        auth: { key_hash_secret: 'short-hash-secret' },
      }),
      [
        'auth_provider.client_secret must be a non-empty string, got a number',
        'auth.key_hash_secret must be a string of at least 32 characters, got a string of 17 characters',
      ],
    );
    expect(message).not.toContain('918273645546');
    expect(message).not.toContain('short-hash-secret');
  });

  it('every problem of a file at once, one line each, sorted by key', () => {
    const text = editsYaml({
      auth: { disabel_auth: true },
      auth_provider: { client_secret: null },
      gateway: { port: 'abc' },
    });
    const { path, message } = loadError(text);
    expect(message).toBe(
      `${path}: invalid configuration\n` +
        '  - auth.disabel_auth is not a known key (did you mean auth.disable_auth?)\n' +
        '  - auth_provider.client_secret is missing (required unless auth.disable_auth is true)\n' +
        '  - gateway.port must be an integer from 0 to 65535, got "abc"',
    );
  });
});
