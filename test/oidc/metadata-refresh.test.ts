/**
 * Discovery (and with it the JWKS) is read again when its caching headers say, at least daily,
 * and at once when an ID token arrives signed with an algorithm or key the metadata does not
 * list: a provider that switches algorithm needs no restart of Gatehouse.
 */
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/log.js';
import {
  MAX_METADATA_LIFETIME_MS,
  metadataLifetimeMs,
  MIN_METADATA_LIFETIME_MS,
  ProviderConnection,
} from '../../src/oidc/provider.js';
import { Browserless } from '../support/browserless.js';
import { startFaultyProvider } from '../support/faulty-provider.js';
import { signIn } from '../support/sign-in.js';
import { CLIENT_ID, CLIENT_SECRET, startFaultyStack } from '../support/stack.js';

const silentLog = createLogger('silent', new Writable({ write: (_chunk, _encoding, done) => done() }));

describe('how long a discovery document is used', () => {
  const lifetime = (headers: Record<string, string>) => metadataLifetimeMs(new Headers(headers), 0);

  it('follows Cache-Control max-age', () => {
    expect(lifetime({ 'cache-control': 'public, max-age=3600' })).toBe(3_600_000);
  });

  it('follows Expires when there is no max-age', () => {
    expect(lifetime({ expires: new Date(7_200_000).toUTCString() })).toBe(7_200_000);
  });

  it('reads it again at least daily, however long the provider says it lasts', () => {
    expect(lifetime({})).toBe(MAX_METADATA_LIFETIME_MS);
    expect(lifetime({ 'cache-control': 'max-age=31536000' })).toBe(MAX_METADATA_LIFETIME_MS);
  });

  it('does not read it at every sign-in when the provider says no-cache or max-age=0', () => {
    expect(lifetime({ 'cache-control': 'no-cache' })).toBe(MIN_METADATA_LIFETIME_MS);
    expect(lifetime({ 'cache-control': 'max-age=0' })).toBe(MIN_METADATA_LIFETIME_MS);
  });
});

describe('re-reading discovery on schedule', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('reads the document again once its max-age has passed', async () => {
    const provider = await startFaultyProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      redirectUri: 'http://127.0.0.1:1/v1/auth/auth',
      discoveryCacheControl: 'max-age=600',
    });
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const connection = new ProviderConnection(
      { metadataUrl: provider.metadataUrl, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, allowHttp: true },
      silentLog,
    );
    try {
      await connection.whenAttempted();
      expect(provider.discoveryRequests).toBe(1);
      await vi.advanceTimersByTimeAsync(600_000 - 1_000);
      expect(provider.discoveryRequests).toBe(1);
      await vi.advanceTimersByTimeAsync(1_000);
      vi.useRealTimers();
      await expect.poll(() => provider.discoveryRequests).toBe(2);
      expect(connection.ready).toBe(true);
    } finally {
      connection.close();
      await provider.close();
    }
  });
});

describe('a provider that switches its signing algorithm', () => {
  it('is followed without a restart: one sign-in is refused, discovery is read again, the next succeeds', async () => {
    const stack = await startFaultyStack();
    try {
      expect((await signIn(stack, new Browserless())).callback.status).toBe(302);
      const readsBefore = stack.provider.discoveryRequests;
      await stack.provider.switchAlgorithm('ES256');

      const refused = (await signIn(stack, new Browserless())).callback;
      expect(refused.status).toBe(400);
      expect(await refused.text()).toContain('Try signing in again');
      expect(stack.provider.discoveryRequests).toBe(readsBefore + 1);
      expect((await fetch(`${stack.url}/readyz`)).status).toBe(200);

      const browser = new Browserless();
      expect((await signIn(stack, browser)).callback.status).toBe(302);
      expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
    } finally {
      await stack.close();
    }
  });
});
