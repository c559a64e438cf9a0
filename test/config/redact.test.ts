import { describe, expect, expectTypeOf, it } from 'vitest';
import { loadConfigFromObject, redactConfig, type Config } from '../../src/config/index.js';
import type { TrustedIssuerConfig } from '../../src/config/schema.js';
import { MINIMAL, SECRETS } from './fixtures.js';

type Budget = { tokens?: number; spend?: number; period: 'day' | 'week' | 'month' };

describe('redactConfig', () => {
  const config = loadConfigFromObject(
    {
      ...MINIMAL,
      auth: {
        key_hash_secret: SECRETS.hash,
        test_token: SECRETS.token,
        test_token_email: 'ci@example.com',
      },
      gateway: { ...MINIMAL.gateway, upstream_api_key: SECRETS.upstream },
      database: { url: `postgres://gatehouse:${SECRETS.dbPassword}@db.internal:5432/gatehouse` },
      redis: { url: `rediss://:${SECRETS.redisPassword}@cache.internal:6380/0` },
      scim: { enabled: true, token: SECRETS.scimToken },
    },
    'redact-test',
    {},
  );

  it('leaves no secret anywhere in the output', () => {
    const printed = JSON.stringify(redactConfig(config));
    for (const secret of Object.values(SECRETS)) expect(printed).not.toContain(secret);
  });

  it('marks set secrets and keeps everything else readable', () => {
    expect(redactConfig(config)).toMatchObject({
      auth: { key_hash_secret: '***', test_token: '***', test_token_email: 'ci@example.com' },
      auth_provider: { client_id: 'gatehouse', client_secret: '***' },
      gateway: { upstream: 'http://127.0.0.1:8000', upstream_api_key: '***' },
      database: { url: 'postgres://gatehouse:***@db.internal:5432/gatehouse' },
      redis: { url: 'rediss://:***@cache.internal:6380/0' },
      scim: { enabled: true, token: '***' },
    });
  });

  it('leaves unset secrets unset and the config itself untouched', () => {
    const plain = loadConfigFromObject(MINIMAL, 'redact-test', {});
    expect(redactConfig(plain)).toMatchObject({
      auth: { key_hash_secret: undefined },
      database: { url: 'sqlite:./gatehouse.db' },
    });
    redactConfig(config);
    expect(config.auth_provider.client_secret).toBe(SECRETS.client);
  });
});

describe('Config', () => {
  it('keeps the documented shape', () => {
    expectTypeOf<Config>().toEqualTypeOf<{
      source: string;
      auth: {
        disable_auth: boolean;
        session_idle_minutes: number;
        session_max_hours: number;
        api_key_prefix: string;
        key_hash_secret?: string;
        api_key_max_days?: number;
        test_token?: string;
        test_token_email?: string;
        failed_auth_per_minute: number;
        allowed_email_domains: string[];
        google_whitelist: string[];
        allow_unverified_email: boolean;
        require_email?: boolean;
        google_workspace_domain?: string;
        allowed_groups: string[];
        admin_emails: string[];
        admin_groups: string[];
        scope_paths: { inference: string[]; training: string[] };
        key_requests_per_minute: number;
        key_tokens_per_minute: number;
        max_key_requests_per_minute: number;
        max_key_tokens_per_minute: number;
        user_requests_per_minute: number;
        user_tokens_per_minute: number;
        max_keys_per_user: number;
        recheck_minutes: number;
        trusted_issuers: TrustedIssuerConfig[];
        device: { code_seconds: number; poll_interval_seconds: number; key_days: number; codes_per_minute: number };
      };
      powerml: { website?: string };
      auth_provider: {
        client_id?: string;
        client_secret?: string;
        server_metadata_url?: string;
        scopes: string[];
        allow_insecure_http: boolean;
        token_endpoint_auth_method?: 'client_secret_basic' | 'client_secret_post';
        end_session_url?: string;
        groups_claim: string;
      };
      auth_providers?: Array<{
        id: string;
        name: string;
        client_id: string;
        client_secret: string;
        server_metadata_url: string;
        scopes: string[];
        allow_insecure_http: boolean;
        token_endpoint_auth_method?: 'client_secret_basic' | 'client_secret_post';
        end_session_url?: string;
        groups_claim: string;
        allowed_email_domains?: string[];
        allow_unverified_email?: boolean;
        require_email?: boolean;
        google_workspace_domain?: string;
        allowed_groups?: string[];
        admin_emails?: string[];
        admin_groups?: string[];
      }>;
      gateway: {
        host: string;
        port: number;
        upstream: string;
        upstream_api_key?: string;
        data_dir: string;
        public_paths: string[];
        admin_paths: string[];
        trusted_proxies: string[];
        log_level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
        access_log: boolean;
        metrics_port?: number;
        metrics_host: string;
        metrics_models: string[];
        shutdown_grace_seconds: number;
        upstream_headers_timeout_seconds: number;
        upstream_idle_timeout_seconds: number;
        forward_auth_skip_body_controls: boolean;
        max_checked_body_mb: number;
        strip_headers: string[];
        upstream_cookies: 'all' | 'none' | string[];
        workers: number | 'auto';
      };
      database: {
        url: string;
        schema?: string;
        pool_size: number;
        statement_timeout_ms: number;
        auto_migrate: boolean;
      };
      redis: { url?: string; key_prefix: string };
      scim: { enabled: boolean; token?: string };
      budgets: {
        enabled?: boolean;
        currency: string;
        prices: Record<string, { input: number; output: number }>;
        time_zone: string;
        per_user?: Budget;
        groups: Record<string, Budget>;
        cut_streams: boolean;
        reserve_tokens: number;
        reserve_tokens_per_model: Record<string, number>;
        reservation_seconds: number;
      };
    }>();
  });
});
