import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, loadConfigFromObject, resolveConfigPath } from '../../src/config/index.js';
import { configSchema } from '../../src/config/schema.js';
import { defaultsFilePath } from '../../src/config/yaml.js';
import { ConfigError } from '../../src/errors.js';
import { MINIMAL, SECRETS, editsYaml, removeEditsFiles, writeEditsFile } from './fixtures.js';

afterAll(removeEditsFiles);

const load = (text: string, env: NodeJS.ProcessEnv = {}) => loadConfig(writeEditsFile(text), env);

describe('loadConfig with good files', () => {
  it('loads the minimal file and keeps its path as the source', () => {
    const path = writeEditsFile(editsYaml());
    const config = loadConfig(path, {});
    expect(config.source).toBe(path);
    expect(config.auth_provider.client_secret).toBe(SECRETS.client);
    expect(config.powerml.website).toBe('https://llm.example.com');
  });

  it('fills every key the edits leave out from the defaults file', () => {
    const config = load(editsYaml());
    expect(config.auth).toEqual({
      disable_auth: false,
      session_idle_minutes: 480,
      session_max_hours: 168,
      api_key_prefix: 'gth_',
      failed_auth_per_minute: 60,
      allowed_email_domains: [],
      google_whitelist: [],
      allow_unverified_email: false,
      require_email: false,
      allowed_groups: [],
      admin_emails: [],
      admin_groups: [],
      scope_paths: { inference: expect.arrayContaining(['^/v1/chat/completions$']), training: expect.any(Array) },
      key_requests_per_minute: 0,
      key_tokens_per_minute: 0,
      max_key_requests_per_minute: 0,
      max_key_tokens_per_minute: 0,
      user_requests_per_minute: 0,
      user_tokens_per_minute: 0,
      max_keys_per_user: 100,
      recheck_minutes: 60,
      trusted_issuers: [],
      device: { code_seconds: 600, poll_interval_seconds: 5, key_days: 30, codes_per_minute: 10 },
    });
    expect(config.auth.key_hash_secret).toBeUndefined();
    expect(config.auth_provider.scopes).toEqual(['openid', 'email', 'profile']);
    expect(config.auth_provider.groups_claim).toBe('groups');
    expect(config.gateway).toMatchObject({
      host: '0.0.0.0',
      port: 5001,
      data_dir: './.gatehouse',
      public_paths: [],
      admin_paths: [],
      trusted_proxies: [],
      forward_auth_skip_body_controls: false,
    });
    expect(config.database.url).toBe('sqlite:./gatehouse.db');
    expect(config.redis.url).toBeUndefined();
  });

  it('reads True/False/TRUE/false as booleans (YAML 1.2 core schema)', () => {
    const text =
      'auth:\n  disable_auth: True\nauth_provider:\n  allow_insecure_http: FALSE\ngateway:\n  upstream: http://127.0.0.1:8000\n';
    const config = load(text);
    expect(config.auth.disable_auth).toBe(true);
    expect(config.auth_provider.allow_insecure_http).toBe(false);
    expect(load(editsYaml({ auth: { disable_auth: false } })).auth.disable_auth).toBe(false);
  });

  it('starts without any provider keys when auth is disabled', () => {
    const config = load('auth:\n  disable_auth: true\ngateway:\n  upstream: http://127.0.0.1:8000\n');
    expect(config.auth.disable_auth).toBe(true);
    expect(config.auth_provider.client_id).toBeUndefined();
    expect(config.powerml.website).toBeUndefined();
  });

  it('replaces ${ENV} in strings, whole or embedded, and reads numbers from it', () => {
    const text = editsYaml({
      auth_provider: { client_secret: '${OIDC_SECRET}' },
      powerml: { website: 'https://${PUBLIC_HOST}/llm' },
      gateway: { port: '${PORT}', upstream_api_key: '${UPSTREAM_KEY}' },
    });
    const env = {
      OIDC_SECRET: 'from-env',
      PUBLIC_HOST: 'llm.example.org',
      PORT: '8080',
      UPSTREAM_KEY: 'k',
    };
    const config = load(text, env);
    expect(config.auth_provider.client_secret).toBe('from-env');
    expect(config.powerml.website).toBe('https://llm.example.org/llm');
    expect(config.gateway.port).toBe(8080);
    expect(config.gateway.upstream_api_key).toBe('k');
  });

  it('ignores platform sections and powerml keys other than website', () => {
    const text = editsYaml({
      powerml: { website: 'https://llm.example.com', key: 'platform-key', model_name: 'm' },
      llama: { anything: [1, 2], nested: { deep: true } },
      prompt: 'not a mapping at all',
    });
    const config = load(text);
    expect(Object.keys(config).sort()).toEqual(
      ['auth', 'auth_provider', 'auth_providers', 'database', 'gateway', 'powerml', 'redis', 'scim', 'source'].sort(),
    );
    expect(config.powerml).toEqual({ website: 'https://llm.example.com' });
  });

  it('leaves platform sections alone even when their names are short or near each other', () => {
    const sections = {
      path: {},
      math: {},
      oauth: {},
      auths: {},
      redis2: {},
      model: {},
      redis_cache: {},
      inference: {},
      verbose: true,
    };
    expect(() => load(editsYaml(sections))).not.toThrow();
  });

  it('accepts an upstream with a path prefix that is not an API version', () => {
    expect(load(editsYaml({ gateway: { upstream: 'http://platform.internal/llm' } })).gateway.upstream).toBe(
      'http://platform.internal/llm',
    );
  });

  it('does not interpolate platform sections, so their unset variables do not fail', () => {
    expect(() => load(editsYaml({ llama: { key: '${PLATFORM_ONLY}' } }))).not.toThrow();
  });

  it('drops trailing slashes from website and upstream but keeps a path prefix', () => {
    const text = editsYaml({
      powerml: { website: 'https://example.com/llm/' },
      gateway: { upstream: 'http://10.0.0.5:8000/' },
    });
    const config = load(text);
    expect(config.powerml.website).toBe('https://example.com/llm');
    expect(config.gateway.upstream).toBe('http://10.0.0.5:8000');
  });

  it('replaces default lists instead of appending to them', () => {
    expect(load(editsYaml({ auth_provider: { scopes: ['openid'] } })).auth_provider.scopes).toEqual(['openid']);
  });

  it('keeps the default when a key is present but empty', () => {
    expect(load(editsYaml({ gateway: { port: null } })).gateway.port).toBe(5001);
  });

  it('allows plain http on loopback hosts, and anywhere with allow_insecure_http', () => {
    for (const host of ['localhost:5001', '127.0.0.1', '127.3.2.1:8080', '[::1]:5001']) {
      const text = editsYaml({
        powerml: { website: `http://${host}` },
        auth_provider: { server_metadata_url: `http://${host}/.well-known/openid-configuration` },
      });
      expect(() => load(text), host).not.toThrow();
    }
    const insecure = editsYaml({
      powerml: { website: 'http://llm.internal' },
      auth_provider: {
        server_metadata_url: 'http://id.internal/.well-known/openid-configuration',
        allow_insecure_http: true,
      },
    });
    expect(load(insecure).powerml.website).toBe('http://llm.internal');
  });

  it('accepts sqlite and postgres database URLs and rediss', () => {
    for (const url of ['sqlite::memory:', 'sqlite:/var/lib/gatehouse.db', 'postgresql://u:p@db/gatehouse']) {
      expect(load(editsYaml({ database: { url } })).database.url).toBe(url);
    }
    expect(load(editsYaml({ redis: { url: 'rediss://cache:6380' } })).redis.url).toBe('rediss://cache:6380');
  });

  it('validates objects in memory the same way and names the given source', () => {
    expect(loadConfigFromObject(MINIMAL, 'demo', {}).source).toBe('demo');
    expect(() => loadConfigFromObject({}, 'demo', {})).toThrow(/^demo: invalid configuration/);
  });
});

describe('the shipped defaults file', () => {
  it('lists every key Gatehouse knows, and nothing else', () => {
    const defaults = parse(readFileSync(defaultsFilePath(), 'utf8')) as Record<string, Record<string, unknown>>;
    for (const [section, schema] of Object.entries(configSchema.shape)) {
      // A list: its items' keys are auth_provider's and a few more, described in a comment.
      if (!('shape' in schema)) continue;
      expect(Object.keys(defaults[section] ?? {}), section).toEqual(Object.keys(schema.shape));
    }
    expect(Object.keys(defaults)).toEqual(Object.keys(configSchema.shape));
  });

  it('is found at the package root', () => {
    expect(defaultsFilePath()).toBe(join(process.cwd(), 'config', 'llama_config.yaml'));
  });
});

describe('resolveConfigPath', () => {
  it('prefers --config, then GATEHOUSE_CONFIG, then ./llama_config_edits.yaml, always absolute', () => {
    expect(resolveConfigPath('/etc/a.yaml', { GATEHOUSE_CONFIG: '/etc/b.yaml' })).toBe('/etc/a.yaml');
    expect(resolveConfigPath(undefined, { GATEHOUSE_CONFIG: '/etc/b.yaml' })).toBe('/etc/b.yaml');
    const fallback = resolveConfigPath(undefined, {});
    expect(isAbsolute(fallback)).toBe(true);
    expect(fallback).toBe(join(process.cwd(), 'llama_config_edits.yaml'));
    expect(resolveConfigPath('rel.yaml', {})).toBe(join(process.cwd(), 'rel.yaml'));
  });
});

describe('ConfigError', () => {
  it('carries the CONFIG_INVALID code', () => {
    try {
      loadConfigFromObject([], 'x', {});
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).code).toBe('CONFIG_INVALID');
      return;
    }
    throw new Error('expected a ConfigError');
  });
});
