import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';
import { gatehouseArgs } from '../support/cli.js';

const run = promisify(execFile);
const CLI = gatehouseArgs();

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function gatehouse(args: string[], env: Record<string, string> = {}): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...CLI, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

function workspace(yaml: string): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-cli-'));
  const file = join(dir, 'llama_config_edits.yaml');
  writeFileSync(file, yaml.replaceAll('$DIR', dir));
  return { dir, file };
}

const KEY = /^gth_[0-9A-Za-z]{36}$/m;

describe('gatehouse config check', () => {
  it('prints the effective config with secrets redacted', async () => {
    const { file } = workspace(`
auth_provider:
  client_id: cli-test
  client_secret: super-secret-value-123
  server_metadata_url: https://idp.example.com/.well-known/openid-configuration
powerml:
  website: https://llm.example.com
gateway:
  upstream: http://127.0.0.1:9
`);
    const result = await gatehouse(['config', 'check', '--config', file]);
    expect(result.code).toBe(0);
    expect(result.stdout).not.toContain('super-secret-value-123');
    expect(JSON.parse(result.stdout).auth_provider.client_secret).toBe('***');
    expect(JSON.parse(result.stdout).gateway.port).toBe(5001);
  });

  it('exits 1 with one message naming the file and the key', async () => {
    const { file } = workspace(`gateway:\n  upstream: http://127.0.0.1:9\n  prot: 80\nauth:\n  disable_auth: True\n`);
    const result = await gatehouse(['config', 'check', '--config', file]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(file);
    expect(result.stderr).toContain('gateway.prot');
    expect(result.stderr).toContain('gateway.port');
  });

  it('finds the file through GATEHOUSE_CONFIG', async () => {
    const { file } = workspace(`gateway:\n  upstream: http://127.0.0.1:9\nauth:\n  disable_auth: True\n`);
    const result = await gatehouse(['config', 'check'], { GATEHOUSE_CONFIG: file });
    expect(result.code).toBe(0);
  });
});

describe('gatehouse keys', () => {
  let stack: FaultyStack;
  let file: string;
  let dir: string;

  beforeAll(async () => {
    ({ dir, file } = workspace(`
auth:
  disable_auth: True
gateway:
  upstream: http://127.0.0.1:9
  data_dir: $DIR/data
database:
  url: sqlite:$DIR/gatehouse.db
`));
    await gatehouse(['migrate', '--config', file]);
    stack = await startFaultyStack({
      gateway: { data_dir: join(dir, 'data') },
      database: { url: `sqlite:${dir}/gatehouse.db` },
    });
  });
  afterAll(() => stack.close());

  it('creates a key that a running gateway on the same database accepts, lists and revokes it', async () => {
    const created = await gatehouse([
      'keys',
      'create',
      '--email',
      'ops@example.com',
      '--name',
      'ci bootstrap',
      '--config',
      file,
    ]);
    expect(created.code).toBe(0);
    const key = KEY.exec(created.stdout)![0];

    const used = await fetch(`${stack.url}/echo/cli`, { headers: { authorization: `Bearer ${key}` } });
    expect(used.status).toBe(200);
    expect(((await used.json()) as { headers: Record<string, string> }).headers['x-forwarded-email']).toBe(
      'ops@example.com',
    );

    const listed = await gatehouse(['keys', 'list', '--email', 'OPS@example.com', '--config', file]);
    expect(listed.stdout).toContain('ci bootstrap');
    expect(listed.stdout).toContain(`gth_…${key.slice(-4)}`);
    expect(listed.stdout).not.toContain(key);
    const id = /^(key_\S+)/m.exec(listed.stdout)![1]!;

    const revoked = await gatehouse(['keys', 'revoke', id, '--config', file]);
    expect(revoked.code).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const refused = await fetch(`${stack.url}/echo/cli`, { headers: { authorization: `Bearer ${key}` } });
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('revoked_api_key');
  });

  it('rejects a number of days that is not a whole positive number', async () => {
    const bad = await gatehouse([
      'keys',
      'create',
      '--email',
      'a@example.com',
      '--name',
      'x',
      '--expires-in-days',
      'ten',
      '--config',
      file,
    ]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('whole number, 1 or more');
  });

  it('says so when revoking an unknown key', async () => {
    const result = await gatehouse(['keys', 'revoke', 'key_doesnotexist', '--config', file]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('no API key with id key_doesnotexist');
  });
});

describe('gatehouse migrate', () => {
  it('names the migrations it applied, then says the database is up to date', async () => {
    const { file } = workspace(`database:\n  url: sqlite:$DIR/gatehouse.db\n`);
    const first = await gatehouse(['migrate', '--config', file]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^applied \d+ migrations: 001_users_sessions_login_flows, 002_api_keys, .+\n$/);
    const again = await gatehouse(['migrate', '--config', file]);
    expect(again.stdout).toBe('database is up to date: no migration to apply\n');
  });
});

describe('gatehouse keys with only the database configured', () => {
  it('lists and creates keys without a provider, website or platform, which serve would require', async () => {
    // Sign-in on, no provider or platform, and a secret from a variable this shell does not set.
    const { file } = workspace(`
auth_provider:
  client_secret: \${GATEHOUSE_CLIENT_SECRET_NOT_SET_HERE}
gateway:
  data_dir: $DIR/data
database:
  url: sqlite:$DIR/gatehouse.db
`);
    const check = await gatehouse(['config', 'check', '--config', file]);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain('gateway.upstream is missing');
    const created = await gatehouse(['keys', 'create', '--email', 'ops@example.com', '--name', 'n', '--config', file]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(KEY);
    const listed = await gatehouse(['keys', 'list', '--config', file]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain('ops@example.com');
  });

  it('still refuses a wrong database key, naming it', async () => {
    const { file } = workspace(`database:\n  url: mysql://x\n`);
    const listed = await gatehouse(['keys', 'list', '--config', file]);
    expect(listed.code).toBe(1);
    expect(listed.stderr).toContain('database.url must be sqlite:PATH');
  });
});
