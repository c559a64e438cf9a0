/**
 * The quirks of the providers Gatehouse is pointed at most, each tested against the discovery
 * document that provider publishes (recorded in test/fixtures/discovery/) or, for a whole sign-in,
 * against the faulty provider sending claims shaped as that provider sends them:
 *  - Auth0: an issuer with a trailing slash;
 *  - Entra ID: the `{tenantid}` issuer template of the common endpoint, group overage;
 *  - Google: `email_verified`, and `hd` under auth.google_workspace_domain;
 *  - Okta: custom authorization servers (issuer under /oauth2/<id>), groups in UserInfo only;
 *  - Keycloak: realm paths and realm roles;
 *  - Amazon Cognito: no end_session_endpoint (auth_provider.end_session_url), `cognito:groups`,
 *    `email_verified` as a string;
 *  - `auth_provider.token_endpoint_auth_method` for providers whose advertised default is wrong.
 * Recorded documents are served on 127.0.0.1 with their hosts rewritten to it, except Entra's common
 * endpoint: openid-client honours its issuer template only on https://login.microsoftonline.com, so
 * there fetch itself is answered in-process.
 * https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfigurationValidation
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import * as client from 'openid-client';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { startSamplePlatform } from '../../src/demo/platform.js';
import { createLogger } from '../../src/log.js';
import Fastify from 'fastify';
import type { AuditLog } from '../../src/audit/log.js';
import { registerFrontchannelLogout } from '../../src/oidc/frontchannel-logout.js';
import { finishLogin, startLogin } from '../../src/oidc/login.js';
import { SignInProviders } from '../../src/oidc/providers.js';
import type { SessionStore } from '../../src/sessions/store.js';
import { issuerUrlOf, ProviderConnection, type ProviderSettings } from '../../src/oidc/provider.js';
import { decideSignIn } from '../../src/policy/sign-in.js';
import { openStorage, type Storage } from '../../src/storage/database.js';
import { Browserless } from '../support/browserless.js';
import { startFaultyProvider, type FaultyProvider, type FaultyProviderOptions } from '../support/faulty-provider.js';
import { freePort } from '../support/ports.js';
import { signIn } from '../support/sign-in.js';
import { providerSettings } from '../support/sign-in-providers.js';
import { CLIENT_ID, CLIENT_SECRET, signInThrough, startGateway } from '../support/stack.js';

/** Credentials RFC 6749 2.3.1 form-encoding leaves as they are, so client_secret_basic stays the first choice. */
const ALPHANUMERIC = { clientId: 'gatehouseTest', clientSecret: 'TestClientSecretOfLettersAndDigits0123' };

type FixtureName = 'auth0' | 'entra-common' | 'entra-tenant' | 'google' | 'okta-custom-as' | 'keycloak' | 'cognito';
type Metadata = Record<string, unknown> & { issuer: string; token_endpoint: string };

const ENTRA_TENANT = '3f1c5e9a-7b2d-4c8e-9a61-2d4b8f0e7c35';
const OTHER_TENANT = 'b7d2e0c4-1a9f-4e36-8c5d-6f0a2b9e4d17';

/** Where each provider publishes the recorded document: what an operator puts in server_metadata_url. */
const METADATA_URLS: Record<FixtureName, string> = {
  auth0: 'https://tenant.auth0.com/.well-known/openid-configuration',
  'entra-common': 'https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration',
  'entra-tenant': `https://login.microsoftonline.com/${ENTRA_TENANT}/v2.0/.well-known/openid-configuration`,
  google: 'https://accounts.google.com/.well-known/openid-configuration',
  'okta-custom-as': 'https://ORG.okta.com/oauth2/default/.well-known/openid-configuration',
  keycloak: 'https://sso.example.com/realms/acme/.well-known/openid-configuration',
  cognito: 'https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123/.well-known/openid-configuration',
};

function readFixture(name: FixtureName): Metadata {
  return JSON.parse(readFileSync(new URL(`../fixtures/discovery/${name}.json`, import.meta.url), 'utf8')) as Metadata;
}

const silentLog = createLogger('silent', new Writable({ write: (_chunk, _encoding, done) => done() }));

/** A ProviderConnection as the gateway makes one, after its first discovery attempt. */
async function connect(settings: Partial<ProviderSettings> & { metadataUrl: string }): Promise<ProviderConnection> {
  const connection = new ProviderConnection(
    {
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      allowHttp: settings.metadataUrl.startsWith('http:'),
      ...settings,
    },
    silentLog,
  );
  await connection.whenAttempted();
  return connection;
}

/** How a token request authenticated the client (RFC 6749 2.3.1). */
function clientAuthOf(headers: Headers, body: URLSearchParams): 'basic' | 'post' | 'none' {
  if (/^Basic /i.test(headers.get('authorization') ?? '')) return 'basic';
  return body.has('client_secret') ? 'post' : 'none';
}

describe('the issuer Gatehouse expects, from each shape of server_metadata_url', () => {
  it('keeps the trailing slash of Auth0’s issuer, so the issuer check passes', () => {
    const issuer = issuerUrlOf(METADATA_URLS.auth0);
    expect(issuer.href).toBe('https://tenant.auth0.com/');
    expect(issuer.href).toBe(readFixture('auth0').issuer);
  });

  it.each<FixtureName>(['auth0', 'entra-tenant', 'google', 'okta-custom-as', 'keycloak', 'cognito'])(
    'takes the issuer %s publishes from its metadata URL',
    (name) => {
      // What openid-client compares (Discovery 4.3): the document's issuer against the URL it was given.
      expect(issuerUrlOf(METADATA_URLS[name]).href).toBe(new URL(readFixture(name).issuer).href);
    },
  );

  it('takes the common endpoint for Entra ID’s multi-tenant document, whose issuer is a template', () => {
    expect(issuerUrlOf(METADATA_URLS['entra-common']).href).toBe('https://login.microsoftonline.com/common/v2.0');
    expect(readFixture('entra-common').issuer).toBe('https://login.microsoftonline.com/{tenantid}/v2.0');
  });

  it.each([
    [
      'Entra ID v1 common endpoint',
      'https://login.microsoftonline.com/common',
      'https://login.microsoftonline.com/common',
    ],
    [
      'Entra ID organizations',
      'https://login.microsoftonline.com/organizations/v2.0',
      'https://login.microsoftonline.com/organizations/v2.0',
    ],
    ['Okta org authorization server', 'https://ORG.okta.com', 'https://org.okta.com/'],
    [
      'Okta custom authorization server by id',
      'https://ORG.okta.com/oauth2/aus1a2b3c4d5e6f7g8h9',
      'https://org.okta.com/oauth2/aus1a2b3c4d5e6f7g8h9',
    ],
    [
      'Keycloak before 17 (/auth prefix)',
      'https://sso.example.com/auth/realms/acme',
      'https://sso.example.com/auth/realms/acme',
    ],
    ['Keycloak master realm', 'https://sso.example.com/realms/master', 'https://sso.example.com/realms/master'],
  ])('takes the issuer of %s', (_label, issuer, expected) => {
    expect(issuerUrlOf(`${issuer}/.well-known/openid-configuration`).href).toBe(expected);
  });

  it.each([
    ['Okta’s OAuth 2.0 metadata', 'https://ORG.okta.com/oauth2/default/.well-known/oauth-authorization-server'],
    [
      'Azure AD B2C with its policy in the query',
      'https://contoso.b2clogin.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration?p=B2C_1_signin',
    ],
  ])('uses %s as it is', (_label, url) => {
    expect(issuerUrlOf(url).href).toBe(new URL(url).href);
  });
});

interface RecordedProvider {
  /** The recorded document with every https origin replaced by this server's. */
  document: Metadata;
  metadataUrl: string;
  /** Each request to the document's token endpoint, answered `invalid_grant`. */
  tokenRequests: Array<'basic' | 'post' | 'none'>;
  close(): Promise<void>;
}

/** Serves a recorded discovery document at its own path on 127.0.0.1, with its hosts rewritten to it. */
async function serveRecorded(name: FixtureName): Promise<RecordedProvider> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const document = JSON.parse(
    JSON.stringify(readFixture(name)).replace(/https:\/\/[A-Za-z0-9.-]+/g, origin),
  ) as Metadata;
  const metadataPath = new URL(METADATA_URLS[name]).pathname;
  const tokenPath = new URL(document.token_endpoint).pathname;
  const tokenRequests: RecordedProvider['tokenRequests'] = [];

  async function answer(request: IncomingMessage): Promise<{ status: number; body: unknown }> {
    const path = new URL(request.url ?? '/', origin).pathname;
    if (request.method === 'GET' && path === metadataPath) return { status: 200, body: document };
    if (request.method === 'POST' && path === tokenPath) {
      let text = '';
      for await (const chunk of request as AsyncIterable<Buffer>) text += chunk.toString('utf8');
      const headers = new Headers(request.headers as Record<string, string>);
      tokenRequests.push(clientAuthOf(headers, new URLSearchParams(text)));
      return { status: 400, body: { error: 'invalid_grant' } };
    }
    return { status: 404, body: { error: 'not_found' } };
  }
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    void answer(request).then(({ status, body }) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body));
    });
  });

  return {
    document,
    metadataUrl: `${origin}${metadataPath}`,
    tokenRequests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Redeems a made-up refresh token: enough to see how the gateway authenticates at the token endpoint. */
async function clientAuthSentBy(
  connection: ProviderConnection,
  recorded: RecordedProvider,
): Promise<string | undefined> {
  await expect(client.refreshTokenGrant(connection.configuration(), 'made-up-refresh-token')).rejects.toMatchObject({
    error: 'invalid_grant',
  });
  return recorded.tokenRequests.at(-1);
}

describe.each<FixtureName>(['auth0', 'entra-tenant', 'google', 'okta-custom-as', 'keycloak', 'cognito'])(
  'the recorded %s document, served on 127.0.0.1',
  (name) => {
    let recorded: RecordedProvider;
    const connections: ProviderConnection[] = [];
    beforeAll(async () => {
      recorded = await serveRecorded(name);
    });
    afterAll(async () => {
      for (const connection of connections) connection.close();
      await recorded.close();
    });
    async function discover(settings: Partial<ProviderSettings> = {}): Promise<ProviderConnection> {
      const connection = await connect({ metadataUrl: recorded.metadataUrl, ...settings });
      connections.push(connection);
      return connection;
    }

    it('is discovered, with the issuer exactly as published', async () => {
      const connection = await discover();
      expect(connection.problem).toBeUndefined();
      expect(connection.ready).toBe(true);
      expect(connection.configuration().serverMetadata().issuer).toBe(recorded.document.issuer);
      expect(connection.endSessionEndpoint).toBe(recorded.document.end_session_endpoint);
    });

    it('authenticates with client_secret_basic, which it advertises, when the secret is letters and digits', async () => {
      expect(recorded.document.token_endpoint_auth_methods_supported).toContain('client_secret_basic');
      const connection = await discover(ALPHANUMERIC);
      expect(await clientAuthSentBy(connection, recorded)).toBe('basic');
    });

    it('authenticates with client_secret_post, which it also advertises, when form-encoding would change the secret', async () => {
      expect(recorded.document.token_endpoint_auth_methods_supported).toContain('client_secret_post');
      expect(await clientAuthSentBy(await discover(), recorded)).toBe('post');
    });

    it('authenticates with client_secret_post when token_endpoint_auth_method says so', async () => {
      const connection = await discover({ tokenEndpointAuthMethod: 'client_secret_post' });
      expect(await clientAuthSentBy(connection, recorded)).toBe('post');
    });
  },
);

describe('the Entra ID common document on any host but login.microsoftonline.com', () => {
  it('is refused: nobody else may have an ID token’s own claims choose its issuer', async () => {
    const recorded = await serveRecorded('entra-common');
    const connection = await connect({ metadataUrl: recorded.metadataUrl });
    try {
      expect(connection.ready).toBe(false);
      expect(connection.problem).toMatch(/issuer does not match/);
    } finally {
      connection.close();
      await recorded.close();
    }
  });
});

interface FakeEntra {
  /** Claims of the next ID token, over the defaults for a user of ENTRA_TENANT. */
  next: Record<string, unknown>;
  /** Signs the next ID token with a key outside the JWKS. */
  strayKey: boolean;
  tokenRequests: Array<'basic' | 'post' | 'none'>;
  fetch: typeof fetch;
}

/**
 * Microsoft's side of a sign-in on the common endpoint, answered in-process: discovery (the
 * recorded document), the JWKS, the token endpoint and Graph's UserInfo endpoint.
 */
async function fakeEntra(realFetch: typeof fetch): Promise<FakeEntra> {
  const document = readFixture('entra-common');
  const signing = await generateKeyPair('RS256', { extractable: true });
  const stray = await generateKeyPair('RS256');
  const jwk: JWK = { ...(await exportJWK(signing.publicKey)), kid: 'entra-key-1', use: 'sig', alg: 'RS256' };
  const json = (body: unknown, status = 200) =>
    new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
  const fake: FakeEntra = {
    next: {},
    strayKey: false,
    tokenRequests: [],
    fetch: async (input, init) => {
      const request = new Request(input, init);
      const url = new URL(request.url);
      if (url.origin !== 'https://login.microsoftonline.com' && url.origin !== 'https://graph.microsoft.com') {
        return realFetch(input, init);
      }
      if (url.href === METADATA_URLS['entra-common']) return json(document);
      if (url.href === document.jwks_uri) return json({ keys: [jwk] });
      if (url.href === document.userinfo_endpoint) return json({ sub: 'pairwise-sub-ada', name: 'Ada Lovelace' });
      if (url.href === document.token_endpoint && request.method === 'POST') {
        const body = new URLSearchParams(await request.text());
        fake.tokenRequests.push(clientAuthOf(request.headers, body));
        return json({
          access_token: 'graph-access-token',
          token_type: 'Bearer',
          expires_in: 3600,
          id_token: await idToken(),
        });
      }
      return json({ error: 'not_found' }, 404);
    },
  };
  async function idToken(): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: `https://login.microsoftonline.com/${ENTRA_TENANT}/v2.0`,
      tid: ENTRA_TENANT,
      aud: CLIENT_ID,
      sub: 'pairwise-sub-ada',
      oid: '00000000-0000-0000-66f3-3332eca7ea81',
      preferred_username: 'ada@contoso.example',
      email: 'ada@contoso.example',
      name: 'Ada Lovelace',
      ver: '2.0',
      iat: now,
      nbf: now,
      exp: now + 3600,
      ...fake.next,
    };
    const key: CryptoKey = fake.strayKey ? stray.privateKey : signing.privateKey;
    return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: jwk.kid! }).sign(key);
  }
  return fake;
}

describe('Entra ID’s common endpoint (fetch answered in-process)', () => {
  const redirectUri = 'https://llm.example.com/v1/auth/auth';
  const realFetch = globalThis.fetch;
  let entra: FakeEntra;
  let storage: Storage;
  const connections: ProviderConnection[] = [];

  beforeAll(async () => {
    entra = await fakeEntra(realFetch);
    vi.stubGlobal('fetch', entra.fetch);
    storage = await openStorage('sqlite::memory:');
  });
  afterAll(async () => {
    vi.unstubAllGlobals();
    for (const connection of connections) connection.close();
    await storage.close();
  });
  beforeEach(() => {
    entra.next = {};
    entra.strayKey = false;
  });

  async function discover(settings: Partial<ProviderSettings> = {}): Promise<ProviderConnection> {
    const connection = await connect({ metadataUrl: METADATA_URLS['entra-common'], ...settings });
    connections.push(connection);
    return connection;
  }

  /** The gateway's own login and callback code, with Microsoft signing whatever `entra.next` says. */
  async function signInAt(connection: ProviderConnection, claims: Record<string, unknown> = {}) {
    const provider = { id: 'default', connection, scopes: ['openid', 'email', 'profile'] };
    const started = await startLogin(storage.db, provider, redirectUri, '/');
    const { searchParams } = started.authorizationUrl;
    entra.next = { nonce: searchParams.get('nonce'), ...claims };
    const callback = new URL(redirectUri);
    callback.searchParams.set('code', 'entra-code');
    callback.searchParams.set('state', searchParams.get('state')!);
    return finishLogin(storage.db, provider, started.flowToken, callback);
  }

  it('is discovered, keeping the {tenantid} template as the issuer', async () => {
    const connection = await discover();
    expect(connection.problem).toBeUndefined();
    expect(connection.configuration().serverMetadata().issuer).toBe(
      'https://login.microsoftonline.com/{tenantid}/v2.0',
    );
  });

  it('signs in a user of any tenant under the issuer of their own tenant', async () => {
    const connection = await discover();
    const ada = await signInAt(connection);
    expect(ada.issuer).toBe(`https://login.microsoftonline.com/${ENTRA_TENANT}/v2.0`);

    const other = await signInAt(connection, {
      iss: `https://login.microsoftonline.com/${OTHER_TENANT}/v2.0`,
      tid: OTHER_TENANT,
    });
    // Two tenants are two issuers, so the same `sub` in each stays two users.
    expect(other.issuer).toBe(`https://login.microsoftonline.com/${OTHER_TENANT}/v2.0`);
  });

  it('takes a front-channel logout whose iss is a tenant’s issuer, ending that tenant’s sessions by sid', async () => {
    const providers = new SignInProviders(
      [
        providerSettings('entra', METADATA_URLS['entra-common'], {
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
        }),
      ],
      createLogger('silent'),
      () => undefined,
    );
    await providers.whenAttempted();
    const endByProvider = vi.fn(async () => []);
    const app = Fastify();
    registerFrontchannelLogout(app, {
      providers,
      sessions: { endByProvider } as unknown as SessionStore,
      audit: { record: vi.fn() } as unknown as AuditLog,
    });
    const logout = (iss: string) =>
      app.inject({ url: `/v1/auth/frontchannel-logout?${new URLSearchParams({ iss, sid: 'entra-sid' })}` });
    try {
      const tenantIssuer = `https://login.microsoftonline.com/${ENTRA_TENANT}/v2.0`;
      const accepted = await logout(tenantIssuer);
      expect(accepted.statusCode).toBe(200);
      expect(accepted.headers['content-security-policy']).toBe(
        "default-src 'none'; frame-ancestors https://login.microsoftonline.com",
      );
      expect(endByProvider).toHaveBeenCalledExactlyOnceWith(tenantIssuer, { sid: 'entra-sid' });
      // Only a tenant id fills the template: not the template itself, another path, or another host.
      for (const iss of [
        'https://login.microsoftonline.com/{tenantid}/v2.0',
        'https://login.microsoftonline.com/common/v2.0',
        `https://login.microsoftonline.com/${ENTRA_TENANT}/extra/v2.0`,
        `https://login.microsoftonline.com.evil.example/${ENTRA_TENANT}/v2.0`,
      ]) {
        expect((await logout(iss)).statusCode, iss).toBe(400);
      }
      expect(endByProvider).toHaveBeenCalledTimes(1);
    } finally {
      providers.close();
      await app.close();
    }
  });

  it('refuses an ID token whose issuer names another tenant than its tid', async () => {
    const connection = await discover();
    await expect(
      signInAt(connection, { iss: `https://login.microsoftonline.com/${OTHER_TENANT}/v2.0` }),
    ).rejects.toMatchObject({
      code: 'OAUTH_JWT_CLAIM_COMPARISON_FAILED',
      cause: { message: expect.stringContaining('"iss"') },
    });
  });

  it('checks the ID token’s signature against the JWKS there too', async () => {
    const connection = await discover();
    entra.strayKey = true;
    await expect(signInAt(connection)).rejects.toMatchObject({ code: 'OAUTH_INVALID_RESPONSE' });
  });

  it('refuses a group overage under allowed_groups, saying so', async () => {
    const connection = await discover();
    const signedIn = await signInAt(connection, {
      _claim_names: { groups: 'src1' },
      _claim_sources: {
        src1: {
          endpoint: `https://graph.windows.net/${ENTRA_TENANT}/users/00000000-0000-0000-66f3-3332eca7ea81/getMemberObjects`,
        },
      },
    });
    const decision = decideSignIn(signedIn.claims, {
      allowedDomains: [],
      allowUnverified: false,
      allowedGroups: ['0f3c1e5a-2b4d-4e6f-8a9b-1c2d3e4f5a6b'],
      adminEmails: [],
      adminGroups: [],
      groupsClaim: 'groups',
    });
    expect(decision).toMatchObject({ allowed: false, reason: 'groups_overage' });
  });

  it('authenticates with client_secret_basic when token_endpoint_auth_method says so', async () => {
    const connection = await discover({ tokenEndpointAuthMethod: 'client_secret_basic' });
    await signInAt(connection);
    expect(entra.tokenRequests.at(-1)).toBe('basic');
  });

  it('authenticates with client_secret_post when token_endpoint_auth_method says so', async () => {
    const connection = await discover({ tokenEndpointAuthMethod: 'client_secret_post' });
    await signInAt(connection);
    expect(entra.tokenRequests.at(-1)).toBe('post');
  });
});

interface QuirkStack {
  url: string;
  provider: FaultyProvider;
  /** The gateway's log lines, for the audit entries. */
  logs: string[];
  close(): Promise<void>;
}

/** The sample platform, a faulty provider started with `providerOptions`, and a gateway with `edits`. */
async function startQuirkStack(
  providerOptions: Partial<FaultyProviderOptions>,
  edits: Record<string, unknown> = {},
): Promise<QuirkStack> {
  const port = await freePort();
  const website = `http://127.0.0.1:${port}`;
  const platform = await startSamplePlatform({ chunkDelayMs: 0 });
  const provider = await startFaultyProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUri: `${website}/v1/auth/auth`,
    ...providerOptions,
  });
  const running = await startGateway(() => signInThrough(website, provider.metadataUrl, platform.url, edits), port);
  return {
    url: running.url,
    provider,
    logs: running.logs,
    async close() {
      await running.close();
      await Promise.all([platform.close(), provider.close()]);
    },
  };
}

/** Signs in with `claims` over the provider's defaults; expects a session and returns the browser. */
async function admit(stack: QuirkStack, claims: Record<string, unknown> = {}): Promise<Browserless> {
  stack.provider.extraClaims = claims;
  const browser = new Browserless();
  const { callback } = await signIn(stack, browser);
  expect(callback.status, await callback.clone().text()).toBe(302);
  const me = await browser.fetch(`${stack.url}/v1/auth/me`);
  expect(me.status).toBe(200);
  expect(await me.json()).toMatchObject({ sub: stack.provider.subject });
  return browser;
}

/** Signs in with `claims` and expects the 403 page saying `message`, no session, and `reason` audited. */
async function refuse(stack: QuirkStack, claims: Record<string, unknown>, reason: string, message: RegExp) {
  stack.provider.extraClaims = claims;
  const browser = new Browserless();
  const { callback } = await signIn(stack, browser);
  const page = await callback.text();
  expect(callback.status, page).toBe(403);
  expect(page).toMatch(message);
  expect(browser.cookie(stack.url, 'gatehouse_session')).toBeUndefined();
  const audits = stack.logs
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.includes('"sign_in_failed"'))
    .map((line) => (JSON.parse(line) as { audit: { detail: unknown } }).audit.detail);
  expect(audits.at(-1)).toEqual({ reason });
}

describe('Auth0: an issuer with a trailing slash', () => {
  let stack: QuirkStack;
  beforeAll(async () => {
    stack = await startQuirkStack({ issuerTrailingSlash: true });
  });
  afterAll(() => stack.close());

  it('signs in, the ID token’s iss keeping the slash', async () => {
    expect(stack.provider.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    await admit(stack);
    expect(decodeJwt(stack.provider.lastIdToken!).iss).toBe(stack.provider.issuer);
  });

  it('refuses an ID token from another issuer', async () => {
    stack.provider.fault = 'wrong-iss';
    try {
      const { callback } = await signIn(stack, new Browserless());
      expect(callback.status).toBe(400);
    } finally {
      stack.provider.fault = 'none';
    }
  });
});

describe('Keycloak: realm roles as groups (groups_claim: realm_access.roles)', () => {
  let stack: QuirkStack;
  beforeAll(async () => {
    stack = await startQuirkStack(
      {},
      {
        auth: { allowed_groups: ['llm-users'], admin_groups: ['llm-admins'] },
        auth_provider: { groups_claim: 'realm_access.roles' },
      },
    );
  });
  afterAll(() => stack.close());

  /** Claims as a Keycloak realm with the "realm roles" mapper set to add them to the ID token. */
  function keycloakClaims(realmRoles: string[], clientRoles: string[] = []): Record<string, unknown> {
    return {
      preferred_username: 'ada',
      given_name: 'Ada',
      family_name: 'Lovelace',
      typ: 'ID',
      azp: CLIENT_ID,
      realm_access: { roles: ['default-roles-acme', 'offline_access', 'uma_authorization', ...realmRoles] },
      resource_access: { [CLIENT_ID]: { roles: clientRoles }, account: { roles: ['manage-account', 'view-profile'] } },
    };
  }

  it('admits a user with the realm role, as a plain user', async () => {
    const browser = await admit(stack, keycloakClaims(['llm-users']));
    expect((await browser.fetch(`${stack.url}/v1/auth/admin/users`)).status).toBe(403);
  });

  it('makes a user with the admin realm role an admin', async () => {
    const browser = await admit(stack, keycloakClaims(['llm-users', 'llm-admins']));
    expect((await browser.fetch(`${stack.url}/v1/auth/admin/users`)).status).toBe(200);
  });

  it('refuses a user without the realm role', async () => {
    await refuse(stack, keycloakClaims([]), 'group_not_allowed', /not in a group allowed/);
  });

  it('refuses a user who holds the role only as a client role', async () => {
    await refuse(stack, keycloakClaims([], ['llm-users']), 'group_not_allowed', /not in a group allowed/);
  });

  it('refuses an account an administrator created without verifying its email', async () => {
    await refuse(
      stack,
      { ...keycloakClaims(['llm-users']), email_verified: false },
      'email_unverified',
      /email address is not verified/,
    );
  });
});

describe('Google: email_verified and hd', () => {
  let stack: QuirkStack;
  beforeAll(async () => {
    stack = await startQuirkStack({ email: 'ada@example.com' }, { auth: { allowed_email_domains: ['example.com'] } });
  });
  afterAll(() => stack.close());

  it('admits a Google Workspace user of the allowed domain (hd present)', async () => {
    await admit(stack, { hd: 'example.com', email_verified: true, picture: 'https://lh3.googleusercontent.com/a/x' });
  });

  it('refuses email_verified: false', async () => {
    await refuse(
      stack,
      { hd: 'example.com', email_verified: false },
      'email_unverified',
      /email address is not verified/,
    );
  });
});

describe('Amazon Cognito: cognito:groups, email_verified as a string, sign-out by end_session_url', () => {
  let stack: QuirkStack;
  const cognitoLogout = 'https://gatehouse-demo.auth.eu-west-1.amazoncognito.com/logout';
  beforeAll(async () => {
    stack = await startQuirkStack(
      { endSessionEndpoint: false },
      {
        auth: { allowed_groups: ['llm-users'], admin_groups: ['llm-admins'] },
        auth_provider: {
          groups_claim: 'cognito:groups',
          end_session_url: `${cognitoLogout}?client_id={client_id}&logout_uri={post_logout_redirect_uri}`,
        },
      },
    );
  });
  afterAll(() => stack.close());

  it('admits a member of the cognito:groups group, email_verified sent as the string "true"', async () => {
    const browser = await admit(stack, { 'cognito:groups': ['llm-users'], email_verified: 'true' });
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(200);
  });

  it('makes a member of the admin group in cognito:groups an admin', async () => {
    const browser = await admit(stack, { 'cognito:groups': ['llm-users', 'llm-admins'] });
    expect((await browser.fetch(`${stack.url}/v1/auth/admin/users`)).status).toBe(200);
  });

  it('refuses a user outside the group, and email_verified as the string "false"', async () => {
    await refuse(stack, { 'cognito:groups': ['others'] }, 'group_not_allowed', /not in a group allowed/);
    await refuse(
      stack,
      { 'cognito:groups': ['llm-users'], email_verified: 'false' },
      'email_unverified',
      /email address is not verified/,
    );
  });

  it('signs out at the hosted UI’s /logout with client_id and logout_uri, though discovery has no end_session_endpoint', async () => {
    const browser = await admit(stack, { 'cognito:groups': ['llm-users'] });
    const logout = await browser.fetch(`${stack.url}/v1/auth/logout`);
    expect(logout.status).toBe(302);
    const location = new URL(logout.headers.get('location')!);
    expect(location.origin + location.pathname).toBe(cognitoLogout);
    expect(location.searchParams.get('client_id')).toBe(CLIENT_ID);
    expect(location.searchParams.get('logout_uri')).toBe(stack.url);
    expect((await browser.fetch(`${stack.url}/v1/auth/me`)).status).toBe(401);
  });
});

describe('Google Workspace only: auth.google_workspace_domain and the hd claim', () => {
  let stack: QuirkStack;
  beforeAll(async () => {
    stack = await startQuirkStack({ email: 'ada@example.com' }, { auth: { google_workspace_domain: 'Example.com' } });
  });
  afterAll(() => stack.close());

  it('admits an account of the Workspace domain (hd compared without case)', async () => {
    await admit(stack, { hd: 'example.com', email_verified: true });
  });

  it('refuses a personal Google account, which has no hd, saying to use the work account', async () => {
    await refuse(
      stack,
      { email: 'ada.lovelace@gmail.com', hd: undefined, email_verified: true },
      'workspace_domain_not_allowed',
      /not a personal Google account/,
    );
  });

  it('refuses a personal account under the company address (no hd) and another Workspace', async () => {
    await refuse(stack, { hd: undefined }, 'workspace_domain_not_allowed', /Google Workspace/);
    await refuse(stack, { hd: 'example.org' }, 'workspace_domain_not_allowed', /Google Workspace/);
  });
});

describe('Entra ID: group object ids and group overage (allowed_groups)', () => {
  const llmUsers = '0f3c1e5a-2b4d-4e6f-8a9b-1c2d3e4f5a6b';
  let stack: QuirkStack;
  beforeAll(async () => {
    stack = await startQuirkStack({ email: 'ada@contoso.example' }, { auth: { allowed_groups: [llmUsers] } });
  });
  afterAll(() => stack.close());

  it('admits a member, though Entra ID sends no email_verified', async () => {
    await admit(stack, { email_verified: undefined, tid: ENTRA_TENANT, groups: [llmUsers] });
  });

  it('refuses a group overage, saying so, instead of judging the groups it left out', async () => {
    await refuse(
      stack,
      {
        email_verified: undefined,
        tid: ENTRA_TENANT,
        _claim_names: { groups: 'src1' },
        _claim_sources: {
          src1: { endpoint: `https://graph.windows.net/${ENTRA_TENANT}/users/ada/getMemberObjects` },
        },
      },
      'groups_overage',
      /overage/,
    );
  });
});

describe('Okta custom authorization server: groups in UserInfo only', () => {
  let stack: QuirkStack;
  beforeAll(async () => {
    stack = await startQuirkStack({}, { auth: { allowed_groups: ['llm-users'] } });
  });
  afterAll(() => stack.close());
  afterEach(() => {
    stack.provider.userinfoOnlyClaims = {};
  });

  it('admits a member whose groups only UserInfo names', async () => {
    stack.provider.userinfoOnlyClaims = { groups: ['Everyone', 'llm-users'] };
    await admit(stack);
    expect(decodeJwt(stack.provider.lastIdToken!)).not.toHaveProperty('groups');
  });

  it('refuses a user whose UserInfo groups lack the group', async () => {
    stack.provider.userinfoOnlyClaims = { groups: ['Everyone'] };
    await refuse(stack, {}, 'group_not_allowed', /not in a group allowed/);
  });

  it('keeps the ID token’s claims when UserInfo says otherwise', async () => {
    stack.provider.userinfoOnlyClaims = { groups: ['llm-users'], email: 'boss@example.com', name: 'Someone Else' };
    const browser = await admit(stack);
    expect(await (await browser.fetch(`${stack.url}/v1/auth/me`)).json()).toMatchObject({
      email: stack.provider.email,
      name: 'Ada Lovelace',
    });
  });
});

describe('auth_provider.token_endpoint_auth_method', () => {
  const stacks: QuirkStack[] = [];
  afterAll(async () => {
    await Promise.all(stacks.map((stack) => stack.close()));
  });
  async function stackWith(
    providerOptions: Partial<FaultyProviderOptions>,
    method?: 'client_secret_basic' | 'client_secret_post',
    credentials = { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET },
  ): Promise<QuirkStack> {
    const { clientId, clientSecret } = credentials;
    const pin = method ? { token_endpoint_auth_method: method } : {};
    const stack = await startQuirkStack(
      { ...providerOptions, clientId, clientSecret },
      { auth_provider: { client_id: clientId, client_secret: clientSecret, ...pin } },
    );
    stacks.push(stack);
    return stack;
  }

  /** The client authentications the token endpoint saw, in order, and whether each was accepted. */
  function clientAuths(stack: QuirkStack): string[] {
    return stack.provider.tokenRequests.map((request) => `${request.clientAuth}:${request.ok ? 'ok' : 'refused'}`);
  }

  it('sends client_secret_post when configured, though the provider advertises basic too', async () => {
    const stack = await stackWith({}, 'client_secret_post');
    await admit(stack);
    expect(stack.provider.tokenRequests.at(-1)).toMatchObject({ clientAuth: 'post', ok: true });
  });

  it('sends client_secret_basic when configured, though the provider advertises only post', async () => {
    const stack = await stackWith({ tokenEndpointAuthMethods: ['client_secret_post'] }, 'client_secret_basic');
    await admit(stack);
    expect(stack.provider.tokenRequests.at(-1)).toMatchObject({ clientAuth: 'basic', ok: true });
  });

  it('sends client_secret_post unconfigured when the provider advertises only post', async () => {
    const stack = await stackWith({ tokenEndpointAuthMethods: ['client_secret_post'] });
    await admit(stack);
    expect(stack.provider.tokenRequests.at(-1)).toMatchObject({ clientAuth: 'post', ok: true });
  });

  it('sends client_secret_basic unconfigured when the provider advertises no method (RFC 6749 default)', async () => {
    const stack = await stackWith({ tokenEndpointAuthMethods: null });
    await admit(stack);
    expect(stack.provider.tokenRequests.at(-1)).toMatchObject({ clientAuth: 'basic', ok: true });
  });

  it('signs in first time, unconfigured, where Basic credentials are not form-decoded and the secret holds -_.~', async () => {
    const stack = await stackWith({ decodesBasicCredentials: false }, undefined, {
      clientId: CLIENT_ID,
      clientSecret: 'glewlwyd-like_secret.with~all-0123',
    });
    await admit(stack);
    expect(clientAuths(stack)).toEqual(['post:ok']);
  });

  describe('with a provider that advertises basic but takes only post', () => {
    it('retries once with client_secret_post, keeps it, and logs how to pin it', async () => {
      const stack = await stackWith({ acceptedClientAuth: ['post'] }, undefined, ALPHANUMERIC);
      await admit(stack);
      expect(clientAuths(stack)).toEqual(['basic:refused', 'post:ok']);
      expect(stack.logs.join('')).toContain('set auth_provider.token_endpoint_auth_method: client_secret_post');
      await admit(stack);
      expect(clientAuths(stack)).toEqual(['basic:refused', 'post:ok', 'post:ok']);
    });

    it('does not retry when token_endpoint_auth_method pins basic; the page names the refused credentials', async () => {
      const stack = await stackWith({ acceptedClientAuth: ['post'] }, 'client_secret_basic');
      const { callback } = await signIn(stack, new Browserless());
      const page = await callback.text();
      expect(clientAuths(stack)).toEqual(['basic:refused']);
      expect(callback.status, page).toBe(502);
      expect(page).toContain('does not accept this service’s credentials');
    });

    it('signs in once token_endpoint_auth_method is client_secret_post', async () => {
      const stack = await stackWith({ acceptedClientAuth: ['post'] }, 'client_secret_post');
      await admit(stack);
      expect(stack.provider.tokenRequests.at(-1)).toMatchObject({ clientAuth: 'post', ok: true });
    });
  });

  it('tries each advertised method once with a wrong secret, then says the credentials were refused', async () => {
    const stack = await startQuirkStack({}, { auth_provider: { client_secret: 'not-the-registered-secret' } });
    stacks.push(stack);
    const { callback } = await signIn(stack, new Browserless());
    expect(callback.status).toBe(502);
    expect(await callback.text()).toContain('Only the administrator can fix this');
    expect(clientAuths(stack)).toEqual(['post:refused', 'basic:refused']);
  });

  describe('with a provider that advertises post and basic but takes only basic', () => {
    it('retries once with client_secret_basic', async () => {
      const stack = await stackWith({ acceptedClientAuth: ['basic'] });
      await admit(stack);
      expect(clientAuths(stack)).toEqual(['post:refused', 'basic:ok']);
    });
  });

  describe('with a provider that advertises post but takes only basic', () => {
    it('signs in once token_endpoint_auth_method is client_secret_basic', async () => {
      const stack = await stackWith(
        { tokenEndpointAuthMethods: ['client_secret_post'], acceptedClientAuth: ['basic'] },
        'client_secret_basic',
      );
      await admit(stack);
      expect(stack.provider.tokenRequests.at(-1)).toMatchObject({ clientAuth: 'basic', ok: true });
    });
  });
});
