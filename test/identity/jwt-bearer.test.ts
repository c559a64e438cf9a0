import { generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFromObject } from '../../src/config/index.js';
import type { TrustedIssuerConfig } from '../../src/config/schema.js';
import { HttpError } from '../../src/errors.js';
import { FailedAuthLimiter } from '../../src/identity/failure-limiter.js';
import type { CallerRequest, Identity } from '../../src/identity/identify.js';
import { globMatcher, jwtBearerLoader } from '../../src/identity/jwt-bearer.js';
import { MINIMAL } from '../config/fixtures.js';
import { nowSeconds, startTestIssuer, type TestIssuer } from '../support/jwt-issuer.js';

const AUDIENCE = 'https://llm.example.com';

function requestWith(token: string): CallerRequest {
  return { headers: { authorization: `Bearer ${token}` }, ip: '192.0.2.1', cookies: {} };
}

describe('globMatcher', () => {
  it('lets * stand for one segment, never across / or :', () => {
    const matches = globMatcher(['org/*', 'repo:org/*:ref:refs/heads/main']);
    expect(matches('org/app')).toBe(true);
    expect(matches('org/app/extra')).toBe(false);
    expect(matches('repo:org/app:ref:refs/heads/main')).toBe(true);
    expect(matches('repo:org/app:ref:refs/heads/evil:ref:refs/heads/main')).toBe(false);
    expect(matches('other/app')).toBe(false);
  });

  it('lets ** stand for anything, and reads every other character literally', () => {
    expect(globMatcher(['refs/heads/**'])('refs/heads/feature/x')).toBe(true);
    expect(globMatcher(['a.b'])('axb')).toBe(false);
    expect(globMatcher(['exact'])('exact')).toBe(true);
    expect(globMatcher(['exact'])('exactly')).toBe(false);
  });
});

describe('jwtBearerLoader', () => {
  let issuer: TestIssuer;
  beforeAll(async () => {
    issuer = await startTestIssuer();
  });
  afterAll(() => issuer.close());

  const entry = (overrides: Partial<TrustedIssuerConfig> = {}): TrustedIssuerConfig => ({
    name: 'jobs',
    issuer: issuer.url,
    jwks_uri: issuer.jwksUri,
    audience: AUDIENCE,
    scopes: ['all'],
    ...overrides,
  });
  const claims = (sub: string, extra: Record<string, unknown> = {}) => ({
    iss: issuer.url,
    aud: AUDIENCE,
    sub,
    iat: nowSeconds(),
    exp: nowSeconds() + 300,
    ...extra,
  });
  const load = (loader: ReturnType<typeof jwtBearerLoader>, token: string) =>
    loader.load(requestWith(token)) as Promise<Identity>;

  it('passes over an API key and anything that is not a JWT', () => {
    const loader = jwtBearerLoader({ issuers: [entry()], apiKeyPrefix: 'gth_', limiter: new FailedAuthLimiter(0) });
    expect(loader.load(requestWith('gth_abc.def.ghi'))).toBeUndefined();
    expect(loader.load(requestWith('plain-opaque-token'))).toBeUndefined();
    expect(loader.load({ headers: {}, ip: '192.0.2.1', cookies: {} })).toBeUndefined();
  });

  it('fetches the keys again for a new kid after the cooldown, and at most once per cooldown for unknown ones', async () => {
    const loader = jwtBearerLoader({
      issuers: [entry()],
      apiKeyPrefix: 'gth_',
      limiter: new FailedAuthLimiter(0),
      refetchCooldownMs: 300,
    });
    await load(loader, await issuer.sign(claims('before-rotation')));
    const afterFirst = issuer.jwksFetches();
    const { privateKey } = await generateKeyPair('RS256');
    const forged = await Promise.allSettled(
      Array.from({ length: 20 }, async (_, i) =>
        load(loader, await issuer.sign(claims(`forged-${i}`), { kid: `unknown-${i}`, key: privateKey })),
      ),
    );
    expect(forged.every((result) => result.status === 'rejected')).toBe(true);
    expect(issuer.jwksFetches() - afterFirst).toBeLessThanOrEqual(1);

    await issuer.rotate();
    await new Promise((resolve) => setTimeout(resolve, 350));
    const identity = await load(loader, await issuer.sign(claims('after-rotation')));
    expect(identity.user.id).toBe('service:jobs/after-rotation');
  });

  it('remembers a bounded number of verified tokens', async () => {
    const signIns: string[] = [];
    const loader = jwtBearerLoader({
      issuers: [entry()],
      apiKeyPrefix: 'gth_',
      limiter: new FailedAuthLimiter(0),
      cacheEntries: 2,
      onSignIn: (_request, identity) => signIns.push(identity.user.id),
    });
    const tokens = await Promise.all(['a', 'b', 'c'].map((sub) => issuer.sign(claims(sub))));
    for (const token of [...tokens, tokens[2]!, tokens[1]!]) await load(loader, token);
    expect(signIns).toEqual(['service:jobs/a', 'service:jobs/b', 'service:jobs/c']);
    // "a" was pushed out by "c", so it is verified (and audited) again.
    await load(loader, tokens[0]!);
    expect(signIns).toHaveLength(4);
  });

  it('grants the scope claim mapped by scope_map, capped by the fixed scopes', async () => {
    const loader = jwtBearerLoader({
      issuers: [
        entry({
          scopes: ['inference', 'read'],
          scope_claim: 'scp',
          scope_map: { 'llm.infer': 'inference', 'llm.train': 'training' },
        }),
      ],
      apiKeyPrefix: 'gth_',
      limiter: new FailedAuthLimiter(0),
    });
    const identity = await load(
      loader,
      await issuer.sign(claims('mapper', { scp: ['llm.infer', 'llm.train', 'toString'] })),
    );
    expect(identity.key?.controls.scopes).toEqual(['inference']);
    expect(identity.method).toBe('jwt_bearer');
    expect(identity.service).toEqual({ name: 'jobs', issuer: issuer.url, subject: 'mapper' });
  });

  it('reads the subject from subject_claim, and refuses one that cannot be a header value', async () => {
    const loader = jwtBearerLoader({
      issuers: [entry({ subject_claim: 'client_id' })],
      apiKeyPrefix: 'gth_',
      limiter: new FailedAuthLimiter(0),
    });
    const identity = await load(loader, await issuer.sign(claims('ignored', { client_id: 'reporting-app' })));
    expect(identity.user.subject).toBe('service:jobs/reporting-app');
    const refusal = await load(loader, await issuer.sign(claims('x', { client_id: 'two\r\nlines' }))).catch(
      (error: unknown) => error,
    );
    expect(refusal).toBeInstanceOf(HttpError);
    expect((refusal as HttpError).code).toBe('token_subject_invalid');
  });

  it('counts refused tokens towards the address limit', async () => {
    const loader = jwtBearerLoader({ issuers: [entry()], apiKeyPrefix: 'gth_', limiter: new FailedAuthLimiter(2) });
    const expired = await issuer.sign(claims('late', { iat: nowSeconds() - 900, exp: nowSeconds() - 600 }));
    for (const code of ['token_expired', 'token_expired', 'too_many_failed_attempts']) {
      await expect(load(loader, expired)).rejects.toMatchObject({ code });
    }
  });
});

describe('auth.trusted_issuers in the configuration', () => {
  const problemsWith = (issuers: unknown[]): string => {
    try {
      loadConfigFromObject({ ...MINIMAL, auth: { trusted_issuers: issuers } }, 'test');
      return '';
    } catch (error) {
      return (error as Error).message;
    }
  };
  const valid = {
    name: 'ci',
    issuer: 'https://token.actions.githubusercontent.com',
    discovery: true,
    audience: AUDIENCE,
    scopes: ['inference'],
  };

  it('accepts a complete entry', () => {
    expect(problemsWith([valid])).toBe('');
  });

  it('names each wrong field of each entry', () => {
    const message = problemsWith([
      { ...valid, audience: undefined },
      { ...valid, scopes: ['admin'], jwks_uri: 'https://example.com/jwks' },
      { ...valid, audiance: AUDIENCE },
      { ...valid, name: 'CI/main' },
      { ...valid, scopes: undefined },
    ]);
    expect(message).toContain('auth.trusted_issuers[0].audience is missing');
    expect(message).toContain('auth.trusted_issuers[1].scopes must be a list of inference, training, read, all');
    expect(message).toContain('auth.trusted_issuers[2] has unknown keys audiance');
    expect(message).toContain('auth.trusted_issuers[3].name must be');
    expect(message).toContain('auth.trusted_issuers[4] needs scopes (granted to every token) or scope_claim');
  });

  it('fetches keys over https only, but for a loopback host', () => {
    expect(problemsWith([{ ...valid, discovery: undefined, jwks_uri: 'http://keys.example.com/jwks' }])).toContain(
      'auth.trusted_issuers[0].jwks_uri must use https',
    );
    expect(problemsWith([{ ...valid, issuer: 'http://id.example.com' }])).toContain(
      'auth.trusted_issuers[0].issuer must use https',
    );
    expect(problemsWith([{ ...valid, discovery: undefined, jwks_uri: 'http://127.0.0.1:8080/jwks' }])).toBe('');
  });

  it('needs exactly one source of keys', () => {
    expect(problemsWith([{ ...valid, jwks_uri: 'https://example.com/jwks' }])).toContain(
      'auth.trusted_issuers[0] needs exactly one source of keys',
    );
    expect(problemsWith([{ ...valid, discovery: false }])).toContain('needs exactly one source of keys');
  });
});
