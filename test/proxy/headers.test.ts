import { describe, expect, it } from 'vitest';
import { buildClientHeaders, buildUpstreamHeaders, compileHeaderRules } from '../../src/proxy/headers.js';

const context = { clientAddress: '127.0.0.1', publicProto: 'https', publicHost: 'llm.example.com', requestId: 'r1' };
const rules = compileHeaderRules({ gatewayCookies: ['gatehouse_session'] });

describe('buildUpstreamHeaders', () => {
  it('still strips spoofed identity headers after a client has sent thousands of invented header names', () => {
    // Verdicts are remembered per header name up to a bound; names past it must be judged afresh.
    for (let index = 0; index < 2_000; index += 1) {
      const incoming = { [`x-invented-${index}`]: 'v', [`x-forwarded-user-${index}`]: 'mallory' };
      const headers = buildUpstreamHeaders(incoming, context, rules);
      expect(headers[`x-invented-${index}`]).toBe('v');
      expect(headers[`x-forwarded-user-${index}`]).toBeUndefined();
    }
    const late = buildUpstreamHeaders(
      { 'x-forwarded-user': 'mallory', x_forwarded_email: 'm@evil.test', 'x-remote-user': 'mallory', accept: '*/*' },
      { ...context, identity: { user: 'ada' } },
      rules,
    );
    expect(late).toMatchObject({ 'x-forwarded-user': 'ada', accept: '*/*' });
    expect(late).not.toHaveProperty('x_forwarded_email');
    expect(late).not.toHaveProperty('x-remote-user');
  });

  it('drops the headers the client lists in Connection, but never the gateway identity headers', () => {
    const headers = buildUpstreamHeaders(
      { connection: 'keep-alive, X-Secret-Hop, x-forwarded-user', 'x-secret-hop': '1', 'keep-alive': 'timeout=5' },
      { ...context, identity: { user: 'ada' } },
      rules,
    );
    expect(headers).not.toHaveProperty('x-secret-hop');
    expect(headers).not.toHaveProperty('keep-alive');
    expect(headers).not.toHaveProperty('connection');
    expect(headers['x-forwarded-user']).toBe('ada');
  });

  /** One client header per family an authenticating proxy uses to tell a platform who is calling. */
  const IDENTITY_FAMILIES = [
    'Remote-User',
    'X-Remote-User',
    'X-Remote-Group',
    'X-Remote-Extra-Scopes',
    'X-WEBAUTH-USER',
    'X-WEBAUTH-EMAIL',
    'X-Authenticated-User',
    'X-Authenticated-Userid',
    'X-Auth-Request-User',
    'X-Auth-Request-Email',
    'X-Auth-Request-Groups',
    'X-Amzn-Oidc-Identity',
    'X-Amzn-Oidc-Data',
    'X-Amzn-Oidc-Accesstoken',
    'X-MS-CLIENT-PRINCIPAL',
    'X-MS-CLIENT-PRINCIPAL-NAME',
    'X-MS-CLIENT-PRINCIPAL-ID',
    'X-MS-TOKEN-AAD-ID-TOKEN',
    'X-Goog-Authenticated-User-Email',
    'X-Goog-Authenticated-User-Id',
    'X-Goog-IAP-JWT-Assertion',
    'Cf-Access-Authenticated-User-Email',
    'Cf-Access-Jwt-Assertion',
    'X-Forwarded-Groups',
    'X-Forwarded-Client-Cert',
    'X-Forwarded-Preferred-Username',
    'X-Consumer-Username',
    'X-Userinfo',
    'X-Access-Token',
    'X-SSL-Client-Cert',
    'Cf-Connecting-IP',
  ];

  it('strips every identity header family a client sends, in any case and with _ for -', () => {
    for (const family of IDENTITY_FAMILIES) {
      for (const name of [family, family.toLowerCase(), family.replaceAll('-', '_')]) {
        const headers = buildUpstreamHeaders({ [name.toLowerCase()]: 'mallory', accept: '*/*' }, context, rules);
        expect(Object.keys(headers), name).not.toContain(name.toLowerCase());
        expect(headers.accept).toBe('*/*');
      }
    }
  });

  it('strips the operator’s gateway.strip_headers too, names and X-Prefix-* prefixes, and nothing else', () => {
    const operator = compileHeaderRules({ gatewayCookies: [], stripHeaders: ['X-Corp-User', 'X-Tenant-*'] });
    const headers = buildUpstreamHeaders(
      { 'x-corp-user': 'm', x_corp_user: 'm', 'x-tenant-id': '7', 'x-tenant-role': 'admin', 'x-corp-users': 'kept' },
      context,
      operator,
    );
    expect(headers).not.toHaveProperty('x-corp-user');
    expect(headers).not.toHaveProperty('x_corp_user');
    expect(headers).not.toHaveProperty('x-tenant-id');
    expect(headers).not.toHaveProperty('x-tenant-role');
    expect(headers['x-corp-users']).toBe('kept');
    // The built-in list still applies beside the operator's.
    expect(buildUpstreamHeaders({ 'remote-user': 'm' }, context, operator)).not.toHaveProperty('remote-user');
  });

  describe('gateway.upstream_cookies', () => {
    const cookie = 'gatehouse_session=s; platform_pref=dark; idp_sso=abc; __Host-gatehouse_login=f';
    const gatewayCookies = ['gatehouse_session', '__Host-gatehouse_login'];
    const sent = (upstreamCookies?: 'all' | 'none' | string[]) =>
      buildUpstreamHeaders({ cookie }, context, compileHeaderRules({ gatewayCookies, upstreamCookies })).cookie;

    it('all (the default): every cookie but Gatehouse’s own', () => {
      expect(sent()).toBe('platform_pref=dark; idp_sso=abc');
      expect(sent('all')).toBe('platform_pref=dark; idp_sso=abc');
    });

    it('none: no Cookie header at all', () => {
      expect(sent('none')).toBeUndefined();
    });

    it('a list: only those, and never Gatehouse’s own even when listed', () => {
      expect(sent(['platform_pref', 'gatehouse_session'])).toBe('platform_pref=dark');
      expect(sent(['not_sent'])).toBeUndefined();
    });
  });
});

describe('buildClientHeaders', () => {
  it("keeps the platform's headers but its X-Request-Id, so the client sees the id the gateway logged", () => {
    expect(
      buildClientHeaders(
        { 'content-type': 'application/json', 'x-request-id': 'platform-id', connection: 'close' },
        'gateway-id',
      ),
    ).toEqual({ 'content-type': 'application/json', 'x-request-id': 'gateway-id' });
  });
});
