/**
 * A sign-in that meets a database outage is told so (issue 21, item 3): the callback and
 * `/v1/auth/login` answer a 503 page saying the service is briefly unavailable, with the cause in
 * the log, never a 400 that blames the sign-in provider. PostgreSQL is cut through a TCP relay in
 * front of it, as the fault suite does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browserless } from '../support/browserless.js';
import { requirePostgres } from '../support/requirements.js';
import { dropSchema, uniqueSchema } from '../support/services.js';
import { signIn } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';
import { startTcpRelay, type TcpRelay } from '../support/tcp-relay.js';

const postgres = await requirePostgres();

describe.skipIf(!postgres)('signing in while PostgreSQL is unreachable', () => {
  const schema = uniqueSchema();
  let relay: TcpRelay;
  let stack: FaultyStack;

  beforeAll(async () => {
    relay = await startTcpRelay(5432);
    stack = await startFaultyStack({
      database: { url: `postgres://postgres@127.0.0.1:${relay.port}/test`, schema },
    });
  });
  afterAll(async () => {
    relay?.restore();
    await stack?.close();
    await relay?.close();
    await dropSchema(schema);
  });

  async function expectUnavailablePage(response: Response): Promise<void> {
    const page = await response.text();
    expect(response.status, page).toBe(503);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page).toContain('Temporarily unavailable');
    expect(page).toContain('try again');
    expect(page).not.toContain('sign-in provider');
  }

  function loggedCauses(): string[] {
    return stack.logs
      .flatMap((chunk) => chunk.split('\n'))
      .filter((line) => line.includes('"reason":"database_unavailable"'));
  }

  it('answers the callback with a 503 page, not a 400 blaming the provider, and logs the cause', async () => {
    const browser = new Browserless();
    const login = await browser.fetch(`${stack.url}/v1/auth/login`);
    const authorize = await browser.fetch(login.headers.get('location')!);
    relay.cut();
    try {
      await expectUnavailablePage(await browser.fetch(authorize.headers.get('location')!));
    } finally {
      relay.restore();
    }
    expect(loggedCauses().some((line) => line.includes('sign-in failed'))).toBe(true);
    expect(browser.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
  });

  it('answers /v1/auth/login with the same 503 page while the database is away', async () => {
    relay.cut();
    try {
      await expectUnavailablePage(await fetch(`${stack.url}/v1/auth/login`, { redirect: 'manual' }));
    } finally {
      relay.restore();
    }
    expect(loggedCauses().some((line) => line.includes('sign-in could not start'))).toBe(true);
  });

  it('signs people in again once the database is back', async () => {
    const browser = new Browserless();
    expect((await signIn(stack, browser)).callback.status).toBe(302);
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
  });
});
