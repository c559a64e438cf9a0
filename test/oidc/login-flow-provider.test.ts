/**
 * Migration 008 records which provider each sign-in was started with. A database from before it
 * keeps its users (keyed by issuer and subject, unchanged), and a sign-in pending across the
 * upgrade belongs to the single provider, `default`, whose callback finishes it; any other
 * provider's callback refuses it without a token request.
 */
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { randomToken, sha256 } from '../../src/crypto/tokens.js';
import { finishLogin } from '../../src/oidc/login.js';
import type { ProviderConnection } from '../../src/oidc/provider.js';
import { openStorage, type Storage } from '../../src/storage/database.js';
import { migrateToLatest } from '../../src/storage/migrations.js';
import { recordSignIn } from '../../src/users/store.js';
import { testDatabase } from '../support/stack.js';

const ISSUER = 'https://id.example.com';

describe('migration 008: the provider of each sign-in flow', () => {
  let storage: Storage;
  let schema: string | undefined;
  const flowTokens = [randomToken(), randomToken()];

  beforeAll(async () => {
    const database = testDatabase();
    schema = database.schema as string | undefined;
    storage = await openStorage(database as { url: string });
    const db = storage.db as unknown as Kysely<unknown>;
    // The database as 007 left it, with a user and two sign-ins under way.
    await sql`delete from gatehouse_migrations where name = '008_login_flow_provider'`.execute(db);
    await sql`alter table login_flows drop column provider`.execute(db);
    for (const token of flowTokens) {
      await sql`insert into login_flows (id_hash, state, nonce, code_verifier, return_to, expires_at)
        values (${sha256(token)}, 'state', 'nonce', 'verifier', '/', ${Date.now() + 600_000})`.execute(db);
    }
  });
  afterAll(async () => {
    await storage?.close();
  });

  it('keeps existing users and gives pending flows the single provider’s id', async () => {
    const before = await recordSignIn(storage.db, { issuer: ISSUER, subject: 'ada', email: 'ada@example.com' });
    expect(await migrateToLatest(storage.db as unknown as Kysely<unknown>, storage.kind, schema)).toEqual([
      '008_login_flow_provider',
    ]);
    const after = await recordSignIn(storage.db, { issuer: ISSUER, subject: 'ada' });
    expect(after).toMatchObject({ id: before.id, email: 'ada@example.com' });
    const flows = await storage.db.selectFrom('login_flows').select('provider').execute();
    expect(flows.map((flow) => flow.provider)).toEqual(['default', 'default']);
  });

  it('finishes such a flow only at the default provider’s callback', async () => {
    const tokenRequest = vi.fn(async () => {
      throw new Error('token endpoint reached');
    });
    const connection = { tokenRequest } as unknown as ProviderConnection;
    const callback = new URL('https://llm.example.com/v1/auth/auth/corp?code=c&state=state');
    await expect(finishLogin(storage.db, { id: 'corp', connection }, flowTokens[0], callback)).rejects.toMatchObject({
      code: 'LOGIN_FLOW_PROVIDER_MISMATCH',
    });
    expect(tokenRequest).not.toHaveBeenCalled();
    await expect(
      finishLogin(
        storage.db,
        { id: 'default', connection },
        flowTokens[1],
        new URL('https://llm.example.com/v1/auth/auth?code=c&state=state'),
      ),
    ).rejects.toThrow('token endpoint reached');
    expect(tokenRequest).toHaveBeenCalledTimes(1);
  });
});
