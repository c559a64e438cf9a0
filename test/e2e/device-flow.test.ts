import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectApiError } from '../support/api-error.js';
import { Browserless } from '../support/browserless.js';
import { createKey, listKeys } from '../support/keys.js';
import { signIn } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:device_code';
const FAILED_AUTH_PER_MINUTE = 5;
const CODES_PER_MINUTE = 6;

interface DeviceCodeAnswer {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string;
  expires_in: number;
  interval: number;
}

/**
 * RFC 8628 served by the gateway, driven over HTTP: what a program sees when polling, and what a
 * person (signed in without a browser, on the test provider) can and cannot approve.
 */
describe('device authorization (RFC 8628)', () => {
  let stack: FaultyStack;
  let ada: Browserless;
  let boss: Browserless;
  /** Each test asks for codes from its own address, so the per-address limits do not mix. */
  let nextAddress = 10;
  const address = () => `198.51.100.${nextAddress++}`;

  async function person(sub: string, email: string): Promise<Browserless> {
    stack.provider.subject = sub;
    stack.provider.email = email;
    const browser = new Browserless();
    const { callback } = await signIn(stack, browser);
    expect(callback.status).toBe(302);
    return browser;
  }

  beforeAll(async () => {
    stack = await startFaultyStack({
      auth: {
        admin_emails: ['boss@example.com'],
        failed_auth_per_minute: FAILED_AUTH_PER_MINUTE,
        device: { poll_interval_seconds: 1, codes_per_minute: CODES_PER_MINUTE },
      },
      // The tests name the program's address with X-Forwarded-For.
      gateway: { trusted_proxies: ['127.0.0.1', '::1'] },
    });
    boss = await person('boss-1', 'boss@example.com');
    ada = await person('ada-1', 'ada@example.com');
  });
  afterAll(() => stack.close());

  const form = (fields: Record<string, string>, from = '203.0.113.1'): RequestInit => ({
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': from },
    body: new URLSearchParams(fields),
  });
  async function askForCode(fields: Record<string, string> = {}, from = address()): Promise<DeviceCodeAnswer> {
    const response = await fetch(
      `${stack.url}/v1/auth/device/code`,
      form({ client_id: 'gatehouse-cli', device_name: 'build-box', scope: 'inference', ...fields }, from),
    );
    const body = (await response.json()) as DeviceCodeAnswer;
    expect(response.status, JSON.stringify(body)).toBe(200);
    return body;
  }
  const poll = async (deviceCode: string) => {
    const response = await fetch(
      `${stack.url}/v1/auth/device/token`,
      form({ grant_type: GRANT_TYPE, device_code: deviceCode }),
    );
    return { status: response.status, body: (await response.json()) as Record<string, string> };
  };
  const decidePost = (browser: Browserless, userCode: string, action: string, origin = stack.url) =>
    browser.fetch(`${stack.url}/v1/auth/device`, {
      method: 'POST',
      headers: { origin, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ user_code: userCode, action }),
    });
  const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('answers the device authorization request as RFC 8628 3.2 says', async () => {
    const code = await askForCode();
    expect(code.user_code).toMatch(/^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
    expect(code.verification_uri).toBe(`${stack.url}/v1/auth/device`);
    expect(code.verification_uri_complete).toBe(`${stack.url}/v1/auth/device?user_code=${code.user_code}`);
    expect(code.expires_in).toBe(600);
    expect(code.interval).toBe(1);
    expect(code.device_code.length).toBeGreaterThanOrEqual(43);
  });

  it('answers authorization_pending, then slow_down to a client polling too fast', async () => {
    const { device_code } = await askForCode();
    expect(await poll(device_code)).toEqual({
      status: 400,
      body: { error: 'authorization_pending', error_description: expect.any(String) },
    });
    expect((await poll(device_code)).body.error).toBe('slow_down');
  });

  it('gives the approving person a key, once, named after the client and host, with the scopes asked for', async () => {
    const from = address();
    const code = await askForCode({ scope: 'inference read' }, from);
    const page = await ada.fetch(code.verification_uri_complete);
    const html = await page.text();
    expect(page.status, html).toBe(200);
    for (const shown of ['gatehouse-cli', 'build-box', from, 'inference', 'read', code.user_code])
      expect(html).toContain(shown);

    const approved = await decidePost(ada, code.user_code, 'approve');
    expect(approved.status, await approved.clone().text()).toBe(200);
    expect(await approved.text()).toContain('gatehouse-cli on build-box');
    await wait(1_100);
    const { status, body } = await poll(code.device_code);
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ access_token: expect.stringMatching(/^gth_/), token_type: 'Bearer' });

    const models = await fetch(`${stack.url}/v1/models`, { headers: { authorization: `Bearer ${body.access_token}` } });
    expect(models.status).toBe(200);
    await expectApiError(
      await fetch(`${stack.url}/v1/fine_tuning/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${body.access_token}` },
      }),
      403,
      'insufficient_scope',
    );
    const listed = (await listKeys(stack, ada)).find((key) => key.id === body.key_id);
    expect(listed).toMatchObject({ name: 'gatehouse-cli on build-box' });
    const days = (Date.parse(listed!.expires_at!) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29.9);
    expect(days).toBeLessThanOrEqual(30);

    // The device code is spent: replaying it gets nothing.
    await wait(1_100);
    expect((await poll(code.device_code)).body.error).toBe('invalid_grant');
    // And the user code no longer finds anything to approve.
    expect((await decidePost(ada, code.user_code, 'approve')).status).toBe(404);
  });

  it('answers access_denied once the person denies', async () => {
    const code = await askForCode();
    const denied = await decidePost(ada, code.user_code, 'deny');
    expect(denied.status).toBe(200);
    expect(await denied.text()).toContain('Device denied');
    expect((await poll(code.device_code)).body.error).toBe('access_denied');
    expect((await decidePost(ada, code.user_code, 'approve')).status).toBe(404);
  });

  it('records approvals and denials in the audit log', () => {
    const lines = stack.logs.join('');
    expect(lines).toContain('"msg":"audit: device_approved"');
    expect(lines).toContain('"msg":"audit: device_denied"');
  });

  it('refuses an approval posted from another origin (CSRF)', async () => {
    const code = await askForCode();
    const forged = await decidePost(ada, code.user_code, 'approve', 'https://evil.example.com');
    expect(forged.status).toBe(403);
    expect((await poll(code.device_code)).body.error).toBe('authorization_pending');
  });

  it('refuses an approval by an API key, even one that may manage keys', async () => {
    const code = await askForCode();
    const { key } = await createKey(stack, ada, { scopes: ['keys', 'all'] });
    const response = await fetch(`${stack.url}/v1/auth/device`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ user_code: code.user_code, action: 'approve' }),
    });
    await expectApiError(response, 403, 'session_required');
    expect((await poll(code.device_code)).body.error).toBe('authorization_pending');
  });

  it('refuses an approval by a person whom policy refuses (disabled by an administrator)', async () => {
    const code = await askForCode();
    const eve = await person('eve-1', 'eve@example.com');
    expect((await eve.fetch(code.verification_uri_complete)).status).toBe(200);
    const users = (await (await boss.fetch(`${stack.url}/v1/auth/admin/users`)).json()) as {
      data: { id: string; email: string }[];
    };
    const eveId = users.data.find((user) => user.email === 'eve@example.com')!.id;
    const disable = await boss.fetch(`${stack.url}/v1/auth/admin/users/${eveId}/disable`, {
      method: 'POST',
      headers: { origin: stack.url },
    });
    expect(disable.status).toBe(200);
    const approval = await decidePost(eve, code.user_code, 'approve');
    expect(approval.status).not.toBe(200);
    expect((await poll(code.device_code)).body.error).toBe('authorization_pending');
  });

  it('limits guessing user codes per address', async () => {
    const guesser = await person('mallory-1', 'mallory@example.com');
    const code = await askForCode();
    const from = { headers: { 'x-forwarded-for': address() } };
    const statuses: number[] = [];
    for (let i = 0; i < FAILED_AUTH_PER_MINUTE + 2; i++) {
      const guess = `BCDF-${'GHJKLMNP'.slice(i, i + 4).padEnd(4, 'Z')}`;
      statuses.push((await guesser.fetch(`${stack.url}/v1/auth/device?user_code=${guess}`, from)).status);
    }
    expect(statuses.slice(0, FAILED_AUTH_PER_MINUTE)).toEqual(Array(FAILED_AUTH_PER_MINUTE).fill(404));
    expect(statuses.slice(FAILED_AUTH_PER_MINUTE)).toEqual([429, 429]);
    // Even the right code is refused from that address until the window ends.
    expect((await guesser.fetch(code.verification_uri_complete, from)).status).toBe(429);
  });

  it('limits device codes per address', async () => {
    const from = address();
    for (let i = 0; i < CODES_PER_MINUTE; i++) await askForCode({}, from);
    const response = await fetch(`${stack.url}/v1/auth/device/code`, form({ client_id: 'gatehouse-cli' }, from));
    expect(response.status).toBe(429);
    expect(((await response.json()) as { error: string }).error).toBe('slow_down');
  });

  it('refuses scopes a device may not ask for, and other grant types', async () => {
    const response = await fetch(
      `${stack.url}/v1/auth/device/code`,
      form({ client_id: 'gatehouse-cli', scope: 'keys' }, address()),
    );
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: string }).error).toBe('invalid_scope');
    const token = await fetch(`${stack.url}/v1/auth/device/token`, form({ grant_type: 'password' }));
    expect(((await token.json()) as { error: string }).error).toBe('unsupported_grant_type');
  });

  it('sends a person who is not signed in to sign in, then back to the code', async () => {
    const response = await fetch(`${stack.url}/v1/auth/device?user_code=BCDF-GHJK`, {
      headers: { accept: 'text/html' },
      redirect: 'manual',
    });
    expect(response.status).toBe(302);
    expect(response.headers.get('location')).toContain(encodeURIComponent('/v1/auth/device?user_code=BCDF-GHJK'));
  });
});
