import { describe, expect, it, vi } from 'vitest';
import { startDemoProvider } from '../../src/demo/provider.js';
import { createLogger } from '../../src/log.js';
import type { ProviderConnection } from '../../src/oidc/provider.js';
import { callbackPathOf, createProvidersRefresher, issuerMatches, SignInProviders } from '../../src/oidc/providers.js';
import type { User } from '../../src/users/store.js';
import { providerSettings } from '../support/sign-in-providers.js';

const TENANT = '3f1c5e9a-7b2d-4c8e-9a61-2d4b8f0e7c35';
const ENTRA = 'https://login.microsoftonline.com/{tenantid}/v2.0';

describe('issuerMatches', () => {
  it('compares an ordinary issuer exactly', () => {
    expect(issuerMatches('https://id.example.com', 'https://id.example.com')).toBe(true);
    expect(issuerMatches('https://id.example.com', 'https://id.example.com/')).toBe(false);
    expect(issuerMatches('https://id.example.com', 'https://ID.example.com')).toBe(false);
  });

  it('fills Entra ID’s {tenantid} with a tenant id only, as openid-client fills it with tid', () => {
    expect(issuerMatches(ENTRA, `https://login.microsoftonline.com/${TENANT}/v2.0`)).toBe(true);
    for (const other of [
      ENTRA,
      'https://login.microsoftonline.com/common/v2.0',
      'https://login.microsoftonline.com//v2.0',
      `https://login.microsoftonline.com/${TENANT}/x/v2.0`,
      `https://login.microsoftonline.com/${TENANT}/v2.0/`,
      `https://evil.example/${TENANT}/v2.0`,
    ]) {
      expect(issuerMatches(ENTRA, other), other).toBe(false);
    }
  });
});

describe('callbackPathOf', () => {
  it('keeps /v1/auth/auth for the single auth_provider and gives each listed provider its own', () => {
    expect(callbackPathOf({ id: 'default', shorthand: true })).toBe('/v1/auth/auth');
    expect(callbackPathOf({ id: 'corp', shorthand: false })).toBe('/v1/auth/auth/corp');
  });
});

describe('createProvidersRefresher', () => {
  /** Two providers whose token requests fail as an unreachable provider does, recording who was asked. */
  function twoProviders(ready = true) {
    const asked: string[] = [];
    const provider = (id: string, issuer: string) => ({
      id,
      issuer,
      connection: {
        tokenRequest: vi.fn(async () => {
          asked.push(id);
          throw new TypeError('fetch failed');
        }),
      } as unknown as ProviderConnection,
      signInRules: {
        allowedDomains: [],
        allowUnverified: false,
        allowedGroups: [],
        adminEmails: [],
        adminGroups: [],
        groupsClaim: 'groups',
      },
    });
    const all = [provider('corp', 'https://corp.example'), provider('partners', 'https://partners.example')];
    const providers = {
      all,
      allReady: ready,
      byIssuer: (issuer: string) => (ready ? all.find((candidate) => candidate.issuer === issuer) : undefined),
    } as unknown as SignInProviders;
    return { asked, providers };
  }
  const userOf = (issuer: string): User => ({
    id: 'u1',
    issuer,
    subject: 'same-sub',
    email: null,
    name: null,
    role: 'user',
    groups: [],
    disabled: false,
  });
  const recheck = { recheckMs: 60_000, onAccessChanged: async () => undefined };

  it('refreshes each user at the provider whose issuer names them', async () => {
    const { asked, providers } = twoProviders();
    const refresher = createProvidersRefresher(providers, createLogger('silent'), recheck);
    expect(await refresher.refresh('rt', userOf('https://partners.example'))).toEqual({ result: 'unavailable' });
    expect(await refresher.refresh('rt', userOf('https://corp.example'))).toEqual({ result: 'unavailable' });
    expect(asked).toEqual(['partners', 'corp']);
  });

  it('refuses a user no configured provider issued, once every provider is known, asking none', async () => {
    const { asked, providers } = twoProviders();
    const refresher = createProvidersRefresher(providers, createLogger('silent'), recheck);
    expect(await refresher.refresh('rt', userOf('https://removed.example'))).toEqual({ result: 'refused' });
    expect(asked).toEqual([]);
  });

  it('ends no session while a provider is not discovered yet', async () => {
    const { asked, providers } = twoProviders(false);
    const refresher = createProvidersRefresher(providers, createLogger('silent'), recheck);
    expect(await refresher.refresh('rt', userOf('https://corp.example'))).toEqual({ result: 'unavailable' });
    expect(asked).toEqual([]);
  });
});

describe('readiness with several providers', () => {
  const DOWN = 'http://127.0.0.1:1/.well-known/openid-configuration';

  async function readiness(metadataUrls: string[]) {
    const providers = new SignInProviders(
      metadataUrls.map((url, i) => providerSettings(`p${i}`, url)),
      createLogger('silent'),
      () => undefined,
    );
    try {
      await providers.whenAttempted();
      return await Promise.all(
        providers
          .readinessChecks()
          .map(async ({ name, check, optional }) => ({ name, problem: await check(), optional: optional === true })),
      );
    } finally {
      providers.close();
    }
  }

  it('stays ready while one provider is down, reporting it by id', async () => {
    const up = await startDemoProvider({ clients: [] });
    try {
      expect(await readiness([up.metadataUrl, DOWN])).toEqual([
        { name: 'provider', problem: undefined, optional: false },
        { name: 'provider p0', problem: undefined, optional: true },
        { name: 'provider p1', problem: expect.stringContaining(`cannot load ${DOWN}`), optional: true },
      ]);
    } finally {
      await up.close();
    }
  });

  it('is not ready when no provider can sign anyone in', async () => {
    const [overall] = await readiness([DOWN, DOWN]);
    expect(overall).toMatchObject({
      name: 'provider',
      optional: false,
      problem: expect.stringMatching(/^p0: .*; p1: /),
    });
  });
});
