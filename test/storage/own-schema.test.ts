/**
 * Gatehouse's schema shares its PostgreSQL database with others (other environments, other
 * applications, other test runs) whose schemas come and go: opening and migrating its own must not
 * depend on them.
 */
import { describe, expect, it } from 'vitest';
import { openStorage } from '../../src/storage/database.js';
import { requirePostgres } from '../support/requirements.js';
import { dropSchema, POSTGRES_URL, uniqueSchema, withPostgres } from '../support/services.js';

const postgres = await requirePostgres();

describe.skipIf(!postgres)('migrating on PostgreSQL while other schemas are created and dropped', () => {
  it('opens and migrates 12 fresh schemas while another client drops schemas full of tables', async () => {
    let churning = true;
    const churn = withPostgres(async (client) => {
      let dropped = 0;
      while (churning) {
        const other = uniqueSchema();
        await client.query(
          `create schema "${other}"; create table "${other}".api_keys (id text, name text); ` +
            `create table "${other}".users (id text, email text)`,
        );
        await client.query(`drop schema "${other}" cascade`);
        dropped += 1;
      }
      return dropped;
    });
    const ours: string[] = [];
    const failures: string[] = [];
    try {
      for (let index = 0; index < 12; index++) {
        const schema = uniqueSchema();
        ours.push(schema);
        await openStorage({ url: POSTGRES_URL, schema }).then(
          (storage) => storage.close(),
          (error: Error) => failures.push(error.message),
        );
      }
    } finally {
      churning = false;
    }
    const dropped = await churn;
    for (const schema of ours) await dropSchema(schema);
    console.log(`opened 12 schemas while ${dropped} others were created and dropped`);
    expect(dropped).toBeGreaterThan(0);
    expect(failures).toEqual([]);
  }, 120_000);
});
