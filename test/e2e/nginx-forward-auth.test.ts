/**
 * Gatehouse as the forward-auth service of a real nginx (`auth_request`): nginx fronts the
 * platform, asks `GET /v1/auth/check` about every request, and hands the identity headers of the
 * answer to the platform. Gatehouse's own pages (sign-in, callback, account, keys) are served
 * through the same nginx under `/v1/auth/`, so the session cookie is set on the host nginx serves.
 *
 * The site config below is the one shown in README.md ("Forward-auth (nginx, Traefik)"), and the
 * last test keeps the two identical.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { Browserless } from '../support/browserless.js';
import { startFaultyProvider } from '../support/faulty-provider.js';
import { hasNginx, startNginx, type NginxPaths, type RunningNginx } from '../support/nginx.js';
import { freePort } from '../support/ports.js';
import { sendRequest, type NodeAnswer } from '../support/raw-http.js';
import { requireResource } from '../support/requirements.js';
import { createKey as createKeyAs, type CreatedKey } from '../support/keys.js';
import { signInForSession } from '../support/sign-in.js';
import { CLIENT_ID, CLIENT_SECRET, startGateway } from '../support/stack.js';

const available = await requireResource('nginx', hasNginx(), 'apt-get install nginx-light');

/** Who the faulty provider signs in (its defaults). */
const OWNER = { sub: 'test-user-1', email: 'ada@example.test' };
const PUBLIC_PATH = '/echo/public/status';
const ADMIN_PATH = '/echo/admin/settings';

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

interface SiteAddresses {
  /** What `listen` takes: a port, or address:port. */
  listen: string;
  /** host:port of Gatehouse. */
  gatehouse: string;
  /** host:port of the platform. */
  platform: string;
}

/**
 * The nginx site (a file for conf.d/, inside `http {}`) that puts Gatehouse in front of the
 * platform with `auth_request`. README.md shows it with `listen 80`, `gatehouse:5001` and
 * `platform:8000`.
 */
function forwardAuthSite({ listen, gatehouse, platform }: SiteAddresses): string {
  return `# A browser asking for a page goes to sign in; anything else gets a 401 (as Gatehouse itself answers).
map "$request_method $http_accept" $gatehouse_send_to_login {
    "~^(GET|HEAD) .*text/html" 1;
    default 0;
}

server {
    listen ${listen};
    server_name llm.example.com;

    # Gatehouse's own pages: sign-in, the provider's callback, the account page, API keys.
    location /v1/auth/ {
        proxy_pass http://${gatehouse};
        proxy_set_header Host $host;
        # The address nginx saw, replacing any X-Forwarded-For the client sent: Gatehouse counts
        # failed keys and sign-in attempts per address, and a client must not pick whose count it spends.
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
    }

    # Everything else is the platform's, for whoever Gatehouse lets in.
    location / {
        auth_request /_gatehouse_check;
        auth_request_set $gatehouse_user $upstream_http_x_forwarded_user;
        auth_request_set $gatehouse_email $upstream_http_x_forwarded_email;
        auth_request_set $gatehouse_groups $upstream_http_x_forwarded_groups;
        auth_request_set $gatehouse_key_id $upstream_http_x_forwarded_key_id;
        auth_request_set $gatehouse_status $upstream_status;
        auth_request_set $gatehouse_retry_after $upstream_http_retry_after;
        error_page 401 = @gatehouse_login;
        # nginx answers any check status but 2xx, 401 and 403 with 500; a limit's 429 is restored here.
        error_page 500 = @gatehouse_refused;

        proxy_pass http://${platform};
        # Always set, so a client's own copies never reach the platform (an empty value drops the header).
        proxy_set_header X-Forwarded-User $gatehouse_user;
        proxy_set_header X-Forwarded-Email $gatehouse_email;
        proxy_set_header X-Forwarded-Groups $gatehouse_groups;
        proxy_set_header X-Forwarded-Key-Id $gatehouse_key_id;
        # The caller's Gatehouse key is not the platform's business.
        proxy_set_header Authorization "";
        # Server-sent events reach the client event by event.
        proxy_buffering off;
    }

    location = /_gatehouse_check {
        internal;
        proxy_pass http://${gatehouse}/v1/auth/check;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Forwarded-Uri $request_uri;
        proxy_set_header X-Forwarded-Method $request_method;
        # As above: the client's own X-Forwarded-For never reaches the check.
        proxy_set_header X-Forwarded-For $remote_addr;
    }

    # Gatehouse's WWW-Authenticate header comes along; its JSON body does not.
    location @gatehouse_login {
        if ($gatehouse_send_to_login) {
            return 302 /v1/auth/login?return_to=$request_uri;
        }
        default_type application/json;
        return 401 '{"error":{"message":"Sign in at /v1/auth/login, or send an API key as Authorization: Bearer <key>.","type":"authentication_error","code":"unauthorized","param":null}}';
    }

    location @gatehouse_refused {
        default_type application/json;
        if ($gatehouse_status = 429) {
            add_header Retry-After $gatehouse_retry_after always;
            return 429 '{"error":{"message":"Too many requests or failed attempts; retry after the number of seconds in Retry-After.","type":"rate_limit_error","code":"rate_limited","param":null}}';
        }
        return 503 '{"error":{"message":"Gatehouse could not check this request; retry shortly.","type":"server_error","code":"gatehouse_unavailable","param":null}}';
    }
}
`;
}

/** The whole nginx.conf: the test's own housekeeping around the site config. */
function nginxConfig(paths: NginxPaths, upstreams: Omit<SiteAddresses, 'listen'>): string {
  return `${paths.housekeeping.main}
events {
    worker_connections 64;
}
http {
${paths.housekeeping.http}
${forwardAuthSite({ listen: paths.listen, ...upstreams })}
}
`;
}

interface ForwardAuthStack {
  nginx: RunningNginx;
  platform: SamplePlatform;
  /** Signed in through nginx; holds the session cookie. */
  owner: Browserless;
  ownerKey: CreatedKey;
  /** Creates a key the way the account page's script would: a same-origin POST with the session. */
  createKey(name: string, controls?: Record<string, unknown>): Promise<CreatedKey>;
  viaNginx(path: string, init?: RequestInit): Promise<Response>;
  withKey(key: string, path: string, headers?: Record<string, string>): Promise<Response>;
  /** The platform's echo of what nginx forwarded; fails with nginx's error log when it is not a 200. */
  echoed(response: Response): Promise<Echo>;
  platformSaw(path: string): boolean;
  close(): Promise<void>;
}

/**
 * Platform, provider, gateway and nginx in front of both, with OWNER signed in through nginx and
 * holding a key. nginx is the public face, so it is the website: the callback and every cookie go
 * through it.
 */
async function startForwardAuthStack(
  trustedProxies: string[],
  auth: Record<string, unknown> = { failed_auth_per_minute: 0 },
): Promise<ForwardAuthStack> {
  const nginxPort = await freePort();
  const website = `http://127.0.0.1:${nginxPort}`;
  const platform = await startSamplePlatform({ chunkDelayMs: 20 });
  const provider = await startFaultyProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUri: `${website}/v1/auth/auth`,
  });
  const gateway = await startGateway(() => ({
    powerml: { website },
    auth_provider: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, server_metadata_url: provider.metadataUrl },
    auth,
    gateway: {
      upstream: platform.url,
      trusted_proxies: trustedProxies,
      public_paths: ['^/echo/public(/|$)'],
      admin_paths: ['^/echo/admin(/|$)'],
    },
  }));
  const nginx = await startNginx(
    (paths) => nginxConfig(paths, { gatehouse: new URL(gateway.url).host, platform: new URL(platform.url).host }),
    nginxPort,
  );
  const owner = new Browserless();
  await signInForSession({ url: nginx.url }, owner);

  const viaNginx = (path: string, init: RequestInit = {}) =>
    fetch(`${nginx.url}${path}`, { ...init, redirect: 'manual' });
  const createKey = (name: string, controls: Record<string, unknown> = {}) =>
    createKeyAs(nginx, owner, { name, ...controls });
  return {
    nginx,
    platform,
    owner,
    ownerKey: await createKey('nginx-test'),
    createKey,
    viaNginx,
    withKey: (key, path, headers = {}) => viaNginx(path, { headers: { authorization: `Bearer ${key}`, ...headers } }),
    async echoed(response) {
      const text = await response.text();
      expect(response.status, `${text}\n${await nginx.errorLog()}`).toBe(200);
      return JSON.parse(text) as Echo;
    },
    platformSaw: (path) => platform.requests.some((request) => request.url === path),
    async close() {
      await nginx.close();
      await gateway.close();
      await Promise.all([platform.close(), provider.close()]);
    },
  };
}

describe.skipIf(!available)('Gatehouse as forward-auth for a real nginx (auth_request)', () => {
  let stack: ForwardAuthStack;
  beforeAll(async () => {
    stack = await startForwardAuthStack(['127.0.0.1']);
  });
  afterAll(() => stack?.close());

  it('answers a program without credentials with a 401 from nginx, and the platform sees nothing', async () => {
    const response = await stack.viaNginx('/echo/no-credentials', { headers: { accept: 'application/json' } });

    expect(response.status).toBe(401);
    expect(response.headers.get('server')).toMatch(/^nginx/);
    expect(response.headers.get('www-authenticate')).toBe('Bearer');
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    expect(stack.platformSaw('/echo/no-credentials')).toBe(false);
  });

  it('sends a browser without a session to sign in through nginx, and back to the page it asked for', async () => {
    const browser = new Browserless();
    const accept = { accept: 'text/html,application/xhtml+xml' };

    const first = await browser.fetch(`${stack.nginx.url}/echo/page`, { headers: accept });
    expect(first.status).toBe(302);
    const login = new URL(first.headers.get('location')!, stack.nginx.url);
    expect(login.origin).toBe(stack.nginx.url);
    expect(login.pathname + login.search).toBe('/v1/auth/login?return_to=/echo/page');

    const { response, visited } = await browser.follow(login.href, { headers: accept });
    expect(visited.at(-1)).toBe(`${stack.nginx.url}/echo/page`);
    const echo = await stack.echoed(response);
    expect(echo.headers['x-forwarded-user']).toBe(OWNER.sub);
    expect(browser.cookie(stack.nginx.url, 'gatehouse_session')).toBeDefined();
  });

  it('lets an API key through to the platform, with the identity headers of the check answer', async () => {
    const echo = await stack.echoed(await stack.withKey(stack.ownerKey.key, '/echo/with-key?model=demo-small'));

    expect(echo.url).toBe('/echo/with-key?model=demo-small');
    expect(echo.headers['x-forwarded-user']).toBe(OWNER.sub);
    expect(echo.headers['x-forwarded-email']).toBe(OWNER.email);
    expect(echo.headers['x-forwarded-key-id']).toBe(stack.ownerKey.id);
    expect(echo.headers['x-forwarded-groups']).toBeUndefined();
    expect(echo.headers.authorization).toBeUndefined();
  });

  it('lets a session through, the same way', async () => {
    const echo = await stack.echoed(await stack.owner.fetch(`${stack.nginx.url}/echo/with-session`));

    expect(echo.headers['x-forwarded-user']).toBe(OWNER.sub);
    expect(echo.headers['x-forwarded-key-id']).toBeUndefined();
  });

  it('replaces identity headers a client sends with what Gatehouse said, or drops them', async () => {
    const forged = {
      'x-forwarded-user': 'admin',
      'x-forwarded-email': 'admin@example.test',
      'x-forwarded-groups': 'admins',
      'x-forwarded-key-id': 'key_forged',
    };

    const echo = await stack.echoed(await stack.withKey(stack.ownerKey.key, '/echo/forged', forged));
    expect(echo.headers['x-forwarded-user']).toBe(OWNER.sub);
    expect(echo.headers['x-forwarded-email']).toBe(OWNER.email);
    expect(echo.headers['x-forwarded-groups']).toBeUndefined();
    expect(echo.headers['x-forwarded-key-id']).toBe(stack.ownerKey.id);

    const anonymous = await stack.viaNginx('/echo/forged-anonymous', { headers: forged });
    expect(anonymous.status).toBe(401);
    expect(stack.platformSaw('/echo/forged-anonymous')).toBe(false);
  });

  it('applies the path rules to the URI nginx names, never to one the client names', async () => {
    const open = await stack.echoed(await stack.viaNginx(PUBLIC_PATH));
    expect(open.headers['x-forwarded-user']).toBeUndefined();

    const forgedUri = { 'x-forwarded-uri': PUBLIC_PATH, 'x-original-uri': PUBLIC_PATH };
    const closed = await stack.viaNginx('/echo/private', { headers: forgedUri });
    expect(closed.status).toBe(401);
    expect(stack.platformSaw('/echo/private')).toBe(false);

    const notAdmin = await stack.withKey(stack.ownerKey.key, ADMIN_PATH);
    expect(notAdmin.status).toBe(403);
    expect(stack.platformSaw(ADMIN_PATH)).toBe(false);
  });

  it('refuses a cross-site POST carried by the session cookie, and forwards a same-origin one', async () => {
    const post = (origin: string) =>
      stack.owner.fetch(`${stack.nginx.url}/echo/form`, {
        method: 'POST',
        headers: { origin, 'content-type': 'application/json' },
        body: '{"prompt":"hello"}',
      });

    expect((await post('http://evil.example')).status).toBe(403);
    expect(stack.platformSaw('/echo/form')).toBe(false);

    const echo = await stack.echoed(await post(stack.nginx.url));
    expect(echo.method).toBe('POST');
    expect(echo.body).toBe('{"prompt":"hello"}');
    expect(echo.headers['x-forwarded-user']).toBe(OWNER.sub);
  });

  it('applies a key’s scopes to the request nginx names: a read key may GET, never POST to a training path', async () => {
    const reader = await stack.createKey('nginx-read', { scopes: ['read'] });
    expect((await stack.echoed(await stack.withKey(reader.key, '/echo/read-get'))).method).toBe('GET');

    const post = await stack.viaNginx('/v1/fine_tuning/jobs', {
      method: 'POST',
      headers: { authorization: `Bearer ${reader.key}`, 'content-type': 'application/json' },
      body: '{"training_file":"file-1"}',
    });
    expect(post.status).toBe(403);
    expect(stack.platformSaw('/v1/fine_tuning/jobs')).toBe(false);
  });

  it('refuses a key with a model allow-list or a token limit (403), since the check never sees the body', async () => {
    for (const controls of [{ models: ['demo-small'] }, { tokens_per_minute: 1_500 }]) {
      const limited = await stack.createKey('nginx-body-controls', controls);
      const path = `/echo/body-controls-${Object.keys(controls)[0]}`;
      const response = await stack.withKey(limited.key, path);
      expect(response.status, JSON.stringify(controls)).toBe(403);
      expect(stack.platformSaw(path)).toBe(false);
    }
  });

  it('counts each request against the key’s request limit: past it, 429 with Retry-After, platform untouched', async () => {
    const once = await stack.createKey('nginx-once', { requests_per_minute: 1 });
    await stack.echoed(await stack.withKey(once.key, '/echo/limited-1'));
    const second = await stack.withKey(once.key, '/echo/limited-2');
    expect(second.status, await second.clone().text()).toBe(429);
    expect(Number(second.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await second.json()) as { error: { type: string } }).error.type).toBe('rate_limit_error');
    expect(stack.platformSaw('/echo/limited-2')).toBe(false);
  });

  it('refuses a revoked key with a 401 at once', async () => {
    const spare = await stack.createKey('nginx-revoked');
    expect((await stack.withKey(spare.key, '/echo/before-revoke')).status).toBe(200);

    const revoke = await stack.owner.fetch(`${stack.nginx.url}/v1/auth/api-keys/${spare.id}`, {
      method: 'DELETE',
      headers: { origin: stack.nginx.url },
    });
    expect(revoke.status).toBe(204);

    const refused = await stack.withKey(spare.key, '/echo/after-revoke');
    expect(refused.status).toBe(401);
    expect(stack.platformSaw('/echo/after-revoke')).toBe(false);
  });
});

/**
 * The failed-auth limit counts per client address, and nginx names the address: a client's own
 * X-Forwarded-For must neither spread its failures over made-up addresses nor spend a victim's
 * count. The victim connects from 127.0.0.2 (all of 127.0.0.0/8 is loopback on Linux).
 */
describe.skipIf(!available)('the failed-auth limit through nginx, with spoofed X-Forwarded-For', () => {
  const FAILURES_PER_MINUTE = 5;
  const VICTIM_ADDRESS = '127.0.0.2';
  let stack: ForwardAuthStack;
  beforeAll(async () => {
    stack = await startForwardAuthStack(['127.0.0.1'], { failed_auth_per_minute: FAILURES_PER_MINUTE });
  });
  afterAll(() => stack?.close());

  /** A GET from the victim's own address (node:http binds `localAddress`; fetch cannot). */
  function fromVictim(path: string, key: string): Promise<NodeAnswer> {
    return sendRequest(`${stack.nginx.url}${path}`, {
      localAddress: VICTIM_ADDRESS,
      headers: { authorization: `Bearer ${key}` },
    });
  }

  it('locks out the guesser whatever X-Forwarded-For it sends, and never the victim it names', async () => {
    const wrongKey = `gth_${'x'.repeat(36)}`;
    const answers: number[] = [];
    for (let attempt = 0; attempt < FAILURES_PER_MINUTE + 3; attempt++) {
      // Half the attempts claim a fresh address, half claim to be the victim.
      const spoofed = attempt % 2 ? VICTIM_ADDRESS : `203.0.113.${attempt + 1}`;
      const response = await stack.withKey(wrongKey, '/echo/guess', { 'x-forwarded-for': spoofed });
      answers.push(response.status);
    }
    expect(answers.slice(0, FAILURES_PER_MINUTE)).toEqual(Array(FAILURES_PER_MINUTE).fill(401));
    expect(answers.slice(FAILURES_PER_MINUTE)).toEqual([429, 429, 429]);
    expect(stack.platformSaw('/echo/guess')).toBe(false);

    const victim = await fromVictim('/echo/victim', stack.ownerKey.key);
    expect(victim.status, victim.text).toBe(200);
    expect((JSON.parse(victim.text) as Echo).headers['x-forwarded-user']).toBe(OWNER.sub);
  });
});

/**
 * The check believes the original URI and method only from `gateway.trusted_proxies`. An operator
 * who leaves nginx's address out (a container network, a second proxy) must get a gateway that
 * refuses more, never one that quietly skips the admin-path and cross-site rules.
 */
describe.skipIf(!available)('forward-auth behind an nginx missing from gateway.trusted_proxies', () => {
  let stack: ForwardAuthStack;
  beforeAll(async () => {
    stack = await startForwardAuthStack([]);
  });
  afterAll(() => stack?.close());

  it('still keeps a non-admin key off an admin path', async () => {
    const response = await stack.withKey(stack.ownerKey.key, ADMIN_PATH);

    expect(response.status).toBe(403);
    expect(stack.platformSaw(ADMIN_PATH)).toBe(false);
  });

  it('still refuses a cross-site POST carried by the session cookie', async () => {
    const response = await stack.owner.fetch(`${stack.nginx.url}/echo/untrusted-form`, {
      method: 'POST',
      headers: { origin: 'http://evil.example', 'content-type': 'application/json' },
      body: '{"prompt":"hello"}',
    });

    expect(response.status).toBe(403);
    expect(stack.platformSaw('/echo/untrusted-form')).toBe(false);
  });
});

describe('the nginx configuration in README.md', () => {
  it('is exactly the site config these tests run', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const documented = forwardAuthSite({ listen: '80', gatehouse: 'gatehouse:5001', platform: 'platform:8000' });

    // A boolean, not toContain: the diff of two long texts would bury the point.
    expect(readme.includes(documented), 'README.md no longer shows the nginx site config proven here').toBe(true);
  });
});
