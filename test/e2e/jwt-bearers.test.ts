import { generateKeyPair, SignJWT, base64url, exportSPKI, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemoProvider, type DemoProvider } from '../../src/demo/provider.js';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { expectApiError } from '../support/api-error.js';
import { nowSeconds, startTestIssuer, type TestIssuer } from '../support/jwt-issuer.js';
import { freePort } from '../support/ports.js';
import { CLIENT_ID, CLIENT_SECRET, signInThrough, startGateway, type RunningGateway } from '../support/stack.js';

const AUDIENCE = 'https://llm.example.com';
const K8S_ISSUER = 'https://kubernetes.default.svc.cluster.local';
const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';
const BATCH_CLIENT = { id: 'nightly-batch', secret: 'nightly-batch-secret-long-enough' };

/**
 * The gateway trusting three real shapes of machine token, and a fourth issuer whose keys forge
 * the others' tokens: the operator's provider (client credentials, RFC 9068 JWT access tokens),
 * a Kubernetes cluster (projected service-account tokens) and GitHub Actions (OIDC tokens).
 */
describe('JWT bearers from trusted issuers', () => {
  let platform: SamplePlatform;
  let provider: DemoProvider;
  let k8s: TestIssuer;
  let github: TestIssuer;
  let stranger: TestIssuer;
  let fresh: TestIssuer;
  let metered: TestIssuer;
  let gateway: RunningGateway;

  beforeAll(async () => {
    const port = await freePort();
    const website = `http://127.0.0.1:${port}`;
    [platform, k8s, github, stranger, fresh, metered] = await Promise.all([
      startSamplePlatform({ chunkDelayMs: 5 }),
      startTestIssuer(K8S_ISSUER),
      startTestIssuer(GITHUB_ISSUER),
      startTestIssuer(),
      startTestIssuer(),
      startTestIssuer(),
    ]);
    provider = await startDemoProvider({
      clients: [
        {
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          redirect_uris: [`${website}/v1/auth/auth`],
          post_logout_redirect_uris: [website],
        },
        {
          client_id: BATCH_CLIENT.id,
          client_secret: BATCH_CLIENT.secret,
          redirect_uris: [],
          post_logout_redirect_uris: [],
          grant_types: ['client_credentials'],
        },
      ],
      resourceServers: [{ resource: AUDIENCE, scope: 'inference training' }],
    });
    gateway = await startGateway(
      (site) =>
        signInThrough(site, provider.metadataUrl, platform.url, {
          auth: {
            trusted_issuers: [
              {
                name: 'ops',
                issuer: provider.issuer,
                discovery: true,
                audience: AUDIENCE,
                scope_claim: 'scope',
                scopes: ['inference'],
              },
              {
                name: 'k8s',
                issuer: K8S_ISSUER,
                jwks_uri: k8s.jwksUri,
                audience: AUDIENCE,
                allowed_subjects: ['system:serviceaccount:batch:*'],
                scopes: ['all'],
                models: ['demo-small'],
                requests_per_minute: 2,
              },
              {
                name: 'ci',
                issuer: GITHUB_ISSUER,
                jwks_uri: github.jwksUri,
                audience: AUDIENCE,
                allowed_claims: { repository: 'acme/*', ref: 'refs/heads/main' },
                scopes: ['inference'],
              },
              {
                name: 'stranger',
                issuer: stranger.url,
                jwks_uri: stranger.jwksUri,
                audience: AUDIENCE,
                scopes: ['all'],
              },
              { name: 'fresh', issuer: fresh.url, jwks_uri: fresh.jwksUri, audience: AUDIENCE, scopes: ['all'] },
              {
                name: 'metered',
                issuer: metered.url,
                jwks_uri: metered.jwksUri,
                audience: AUDIENCE,
                scopes: ['inference'],
                budget: { tokens: 10, period: 'day' },
              },
            ],
          },
        }),
      port,
    );
  });
  afterAll(async () => {
    await gateway?.close();
    await Promise.all([platform, provider, k8s, github, stranger, fresh, metered].map((server) => server?.close()));
  });

  const call = (token: string, path = '/v1/models', body?: unknown) =>
    fetch(`${gateway.url}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const chat = (token: string, model = 'demo-small') =>
    call(token, '/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hello there' }] });
  const lastPlatformRequest = () => platform.requests.at(-1)!;
  /** The client credentials grant at the demo provider, as the batch job's own client. */
  const askForToken = (fields: Record<string, string>) =>
    fetch(`${provider.issuer}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${BATCH_CLIENT.id}:${BATCH_CLIENT.secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', ...fields }),
    });

  const k8sClaims = (overrides: JWTPayload = {}): JWTPayload => ({
    iss: K8S_ISSUER,
    sub: 'system:serviceaccount:batch:reporter',
    aud: [AUDIENCE],
    iat: nowSeconds(),
    nbf: nowSeconds(),
    exp: nowSeconds() + 600,
    'kubernetes.io': {
      namespace: 'batch',
      pod: { name: 'reporter-7d9f', uid: 'c1d2' },
      serviceaccount: { name: 'reporter', uid: 'a1b2' },
    },
    ...overrides,
  });
  const githubClaims = (overrides: JWTPayload = {}): JWTPayload => ({
    iss: GITHUB_ISSUER,
    aud: AUDIENCE,
    sub: 'repo:acme/app:ref:refs/heads/main',
    repository: 'acme/app',
    repository_owner: 'acme',
    ref: 'refs/heads/main',
    job_workflow_ref: 'acme/app/.github/workflows/nightly.yml@refs/heads/main',
    iat: nowSeconds(),
    nbf: nowSeconds(),
    exp: nowSeconds() + 300,
    ...overrides,
  });

  describe("an issuer's budget", () => {
    const meteredToken = (sub: string) =>
      metered.sign({ iss: metered.url, sub, aud: AUDIENCE, iat: nowSeconds(), exp: nowSeconds() + 600 });

    it('gives each machine subject its own budget, refusing it with 429 budget_exceeded once spent', async () => {
      const spender = await meteredToken('nightly-report');
      // "hello there" costs 2 prompt and 4 completion tokens: the budget of 10 admits two chats.
      const first = await chat(spender);
      expect(first.status).toBe(200);
      expect(first.headers.get('x-budget-remaining')).toBe('10 tokens');
      await first.text();
      // Settling follows the answer's end; each try that is still admitted spends 6 more.
      let refusal: Response | undefined;
      await expect
        .poll(
          async () => {
            const answer = await chat(spender);
            if (answer.status === 429) refusal = answer;
            else await answer.text();
            return answer.status;
          },
          { timeout: 5_000, interval: 50 },
        )
        .toBe(429);
      const { error } = await expectApiError(refusal!, 429, 'budget_exceeded');
      expect(error.message).toMatch(
        /^service:metered\/nightly-report's daily budget of 10 tokens \(machine budget\) is used up; it resets at /,
      );
      expect(Number(refusal!.headers.get('retry-after'))).toBeGreaterThan(0);

      const other = await chat(await meteredToken('hourly-sync'));
      expect(other.status, 'another subject of the issuer has a budget of its own').toBe(200);
      expect(other.headers.get('x-budget-remaining')).toBe('10 tokens');
      await other.text();
      const unmetered = await chat(
        await github.sign(githubClaims({ sub: 'repo:acme/budgetless:ref:refs/heads/main' })),
      );
      expect(unmetered.headers.get('x-budget-remaining'), 'an issuer without a budget is not charged').toBeNull();
      await unmetered.text();
    });
  });

  describe('the three shapes', () => {
    it("accepts the operator's provider's client-credentials access token, with the scopes it was granted", async () => {
      const answer = await askForToken({ scope: 'inference training', resource: AUDIENCE });
      const grant = (await answer.json()) as { access_token: string; token_type: string };
      expect(answer.status, JSON.stringify(grant)).toBe(200);
      expect(grant.access_token.split('.')).toHaveLength(3);

      const response = await chat(grant.access_token);
      expect(response.status, await response.clone().text()).toBe(200);
      expect(lastPlatformRequest().headers['x-forwarded-user']).toBe(`service:ops/${BATCH_CLIENT.id}`);
      expect(lastPlatformRequest().headers['x-forwarded-client']).toBe(provider.issuer);
      // The platform gets who is asking, never the token itself.
      expect(lastPlatformRequest().headers.authorization).toBeUndefined();
      expect(lastPlatformRequest().headers['x-forwarded-key-id']).toBeUndefined();
      // The token was granted training too, but the issuer's fixed scopes cap it at inference.
      await expectApiError(await call(grant.access_token, '/v1/fine_tuning/jobs', {}), 403, 'insufficient_scope');
    });

    it('has the provider refuse a client-credentials token for a resource it does not serve', async () => {
      const answer = await askForToken({ resource: 'https://elsewhere.example.com' });
      expect(answer.status).toBe(400);
      expect(((await answer.json()) as { error: string }).error).toBe('invalid_target');
    });

    it('accepts a Kubernetes service-account token, applying its model allow-list and rate limit', async () => {
      const token = await k8s.sign(k8sClaims());
      const response = await chat(token);
      expect(response.status, await response.clone().text()).toBe(200);
      expect(lastPlatformRequest().headers['x-forwarded-user']).toBe(
        'service:k8s/system:serviceaccount:batch:reporter',
      );
      expect(lastPlatformRequest().headers['x-forwarded-client']).toBe(K8S_ISSUER);
      await expectApiError(await chat(token, 'demo-large'), 403, 'model_not_allowed');

      const limited = await k8s.sign(k8sClaims({ sub: 'system:serviceaccount:batch:limited' }));
      expect((await call(limited)).status).toBe(200);
      expect((await call(limited)).status).toBe(200);
      await expectApiError(await call(limited), 429, 'rate_limit_exceeded');
    });

    it('refuses a service account outside allowed_subjects with 403', async () => {
      const token = await k8s.sign(k8sClaims({ sub: 'system:serviceaccount:kube-system:default' }));
      await expectApiError(await call(token), 403, 'subject_not_allowed');
    });

    it('accepts a GitHub Actions token from an allowed repository and branch', async () => {
      const response = await chat(await github.sign(githubClaims()));
      expect(response.status, await response.clone().text()).toBe(200);
      expect(lastPlatformRequest().headers['x-forwarded-user']).toBe('service:ci/repo:acme/app:ref:refs/heads/main');
      expect(lastPlatformRequest().headers['x-forwarded-client']).toBe(GITHUB_ISSUER);
    });

    it('refuses a GitHub Actions token from another repository or branch with 403', async () => {
      const otherRepo = await github.sign(
        githubClaims({ repository: 'evil/app', sub: 'repo:evil/app:ref:refs/heads/main' }),
      );
      await expectApiError(await call(otherRepo), 403, 'claim_not_allowed');
      const otherBranch = await github.sign(
        githubClaims({ ref: 'refs/heads/dev', sub: 'repo:acme/app:ref:refs/heads/dev' }),
      );
      await expectApiError(await call(otherBranch), 403, 'claim_not_allowed');
    });

    it('names the machine and its issuer to forward-auth callers too, and keeps its controls', async () => {
      const check = async (token: string) =>
        fetch(`${gateway.url}/v1/auth/check`, {
          headers: { authorization: `Bearer ${token}`, 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/v1/models' },
        });
      const answer = await check(await github.sign(githubClaims()));
      expect(answer.status).toBe(200);
      expect(answer.headers.get('x-forwarded-user')).toBe('service:ci/repo:acme/app:ref:refs/heads/main');
      expect(answer.headers.get('x-forwarded-client')).toBe(GITHUB_ISSUER);
      expect(answer.headers.get('x-forwarded-key-id')).toBeNull();
      // A model allow-list cannot be enforced where the body is never seen, as for a key.
      await expectApiError(await check(await k8s.sign(k8sClaims())), 403, 'body_controls_unenforceable');
    });

    it('verifies a token once and remembers it until it expires, auditing the sign-in once', async () => {
      const token = await github.sign(
        githubClaims({ sub: 'repo:acme/cached:ref:refs/heads/main', repository: 'acme/cached' }),
      );
      for (let i = 0; i < 3; i++) expect((await call(token)).status).toBe(200);
      const audits = gateway.logs.filter(
        (line) => line.includes('"msg":"audit: machine_sign_in"') && line.includes('repo:acme/cached'),
      );
      expect(audits).toHaveLength(1);
      expect(JSON.parse(audits[0]!)).toMatchObject({
        audit: { actor_user_id: 'service:ci/repo:acme/cached:ref:refs/heads/main', target: 'ci' },
      });
    });
  });

  describe('token faults: each 401, OpenAI-shaped, and never reaching the platform', () => {
    const refused = async (token: string, code: string) => {
      const before = platform.requests.length;
      const body = await expectApiError(await call(token), 401, code);
      expect(platform.requests.length).toBe(before);
      return body;
    };

    it('refuses an issuer that is not trusted, without fetching anything', async () => {
      const fetchesBefore = [k8s, github, stranger, fresh].map((issuer) => issuer.jwksFetches());
      const token = await stranger.sign(k8sClaims({ iss: 'https://evil.example.com' }));
      const { error } = await refused(token, 'untrusted_issuer');
      expect(error.message).toContain('auth.trusted_issuers');
      expect([k8s, github, stranger, fresh].map((issuer) => issuer.jwksFetches())).toEqual(fetchesBefore);
    });

    it('refuses a token for another audience', async () => {
      await refused(await k8s.sign(k8sClaims({ aud: 'https://other-api.example.com' })), 'token_wrong_audience');
    });

    it('refuses an expired token', async () => {
      await refused(await k8s.sign(k8sClaims({ iat: nowSeconds() - 7200, exp: nowSeconds() - 3600 })), 'token_expired');
    });

    it('refuses a token that is not valid yet', async () => {
      await refused(await k8s.sign(k8sClaims({ nbf: nowSeconds() + 3600 })), 'token_not_yet_valid');
    });

    it('refuses a token whose signature does not verify', async () => {
      const token = await k8s.sign(k8sClaims({ sub: 'system:serviceaccount:batch:tampered' }));
      const [header, payload, signature] = token.split('.') as [string, string, string];
      const forgedPayload = base64url.encode(
        JSON.stringify({ ...k8sClaims(), sub: 'system:serviceaccount:batch:admin' }),
      );
      await refused(`${header}.${forgedPayload}.${signature}`, 'token_signature_invalid');
      expect(payload).not.toBe(forgedPayload);
    });

    it('refuses alg none', async () => {
      const header = base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }));
      await refused(`${header}.${base64url.encode(JSON.stringify(k8sClaims()))}.`, 'token_algorithm_refused');
    });

    it("refuses HS256 signed with the issuer's public key as the secret", async () => {
      const publicJwk = k8s.publicJwk();
      const { publicKey } = await generateKeyPair('RS256', { extractable: true });
      // Both spellings of "the public key" an attacker would try: the JWK's JSON and a PEM.
      for (const secret of [JSON.stringify(publicJwk), await exportSPKI(publicKey)]) {
        const token = await new SignJWT(k8sClaims())
          .setProtectedHeader({ alg: 'HS256', kid: publicJwk.kid })
          .sign(new TextEncoder().encode(secret));
        await refused(token, 'token_algorithm_refused');
      }
    });

    it('refuses a key id the issuer does not publish, after fetching its keys', async () => {
      const before = fresh.jwksFetches();
      const { privateKey } = await generateKeyPair('RS256');
      const token = await fresh.sign(
        { ...k8sClaims(), iss: fresh.url, sub: 'job' },
        { kid: 'never-published', key: privateKey },
      );
      await refused(token, 'token_key_unknown');
      expect(fresh.jwksFetches()).toBeGreaterThan(before);
    });

    it("refuses issuer A's token carrying issuer B's iss (and B's kid)", async () => {
      const token = await stranger.sign(k8sClaims(), { kid: k8s.publicJwk().kid });
      await refused(token, 'token_signature_invalid');
    });

    it('refuses a token without exp, which could never be forgotten', async () => {
      const { exp: _exp, ...claims } = k8sClaims();
      await refused(await k8s.sign(claims), 'invalid_token');
    });

    it('leaves API-key handling to the API-key loader for anything that is not a JWT', async () => {
      await expectApiError(await call('gth_not-a-real-key'), 401, 'invalid_api_key');
    });
  });
});
