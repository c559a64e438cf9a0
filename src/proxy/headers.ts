import type { IncomingHttpHeaders } from 'node:http';

/** RFC 9110 7.6.1: meaningful for one connection only, never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
]);

/**
 * Headers a platform or a framework in front of it may read as "who is calling" or "which URL was
 * asked for": the client may not set any of them; the gateway sets its own. Besides the usual
 * addresses and rewrites, these are the identity headers of the common authenticating proxies
 * (Apache/nginx `Remote-User`, Grafana's `X-WEBAUTH-*`, Kubernetes' `X-Remote-*`, oauth2-proxy's
 * `X-Auth-Request-*` and `X-Forwarded-*`, AWS ALB's `X-Amzn-Oidc-*`, Azure App Service's
 * `X-MS-CLIENT-PRINCIPAL*` and `X-MS-TOKEN-*`, Google IAP's `X-Goog-*`, Cloudflare Access's
 * `Cf-Access-*`, Kong's `X-Consumer-*`, TLS client certificates), any of which a platform may
 * have been set up to trust. Names are compared after lower-casing and mapping `_` to `-`, because
 * some servers treat those as the same header.
 */
const SPOOFABLE = new Set([
  'authorization',
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-cluster-client-ip',
  'remote-user',
  'x-user',
  'x-email',
  'x-user-id',
  'x-userinfo',
  'x-id-token',
  'x-access-token',
  'x-jwt-assertion',
  'x-original-url',
  'x-original-uri',
  'x-rewrite-url',
  'host',
  'expect',
]);
const SPOOFABLE_PREFIXES = [
  'x-forwarded-',
  'x-auth-request-',
  'x-gatehouse-',
  'x-remote-',
  'x-webauth-',
  'x-authenticated-',
  'x-amzn-oidc-',
  'x-ms-client-principal',
  'x-ms-token-',
  'x-goog-authenticated-user-',
  'x-goog-iap-',
  'cf-access-',
  'x-consumer-',
  'x-credential-',
  'x-ssl-client-',
  'ssl-client-',
  'x-client-cert',
  'x-arr-clientcert',
];

function canonical(name: string): string {
  return name.toLowerCase().replaceAll('_', '-');
}

/** Clients send the same few header names on every request, so each verdict is kept up to this many. */
const MAX_VERDICTS = 512;

/** Which cookies reach the platform: `all` but Gatehouse's own, `none`, or only the named ones. */
export type UpstreamCookies = 'all' | 'none' | readonly string[];

/** What the gateway adds to or removes from every request. */
export interface GatewayHeaderRules {
  upstreamApiKey?: string;
  gatewayCookies: readonly string[];
  /** The operator's own additions to the strip list (`gateway.strip_headers`); `X-Corp-*` is a prefix. */
  stripHeaders?: readonly string[];
  upstreamCookies?: UpstreamCookies;
}

/** The rules compiled once: which client headers are dropped, and which cookies are kept. */
export interface HeaderPolicy {
  upstreamApiKey?: string;
  isStripped(name: string): boolean;
  keepsCookie(name: string): boolean;
  /** No cookie at all reaches the platform. */
  dropsCookies: boolean;
}

export function compileHeaderRules(rules: GatewayHeaderRules): HeaderPolicy {
  const exact = new Set(SPOOFABLE);
  const prefixes = [...SPOOFABLE_PREFIXES];
  for (const entry of rules.stripHeaders ?? []) {
    const name = canonical(entry);
    if (name.endsWith('*')) prefixes.push(name.slice(0, -1));
    else exact.add(name);
  }
  const judge = (name: string) => {
    const key = canonical(name);
    return HOP_BY_HOP.has(key) || exact.has(key) || prefixes.some((prefix) => key.startsWith(prefix));
  };
  // Bounded, so a client inventing names cannot grow it.
  const verdicts = new Map<string, boolean>();
  const cookies = rules.upstreamCookies ?? 'all';
  const listed = Array.isArray(cookies) ? new Set(cookies) : undefined;
  return {
    upstreamApiKey: rules.upstreamApiKey,
    isStripped(name) {
      let verdict = verdicts.get(name);
      if (verdict === undefined) {
        verdict = judge(name);
        if (verdicts.size < MAX_VERDICTS) verdicts.set(name, verdict);
      }
      return verdict;
    },
    // Gatehouse's own cookies never leave, even when listed.
    keepsCookie: (name) => !rules.gatewayCookies.includes(name) && (listed === undefined || listed.has(name)),
    dropsCookies: cookies === 'none',
  };
}

/** The Cookie header without the cookies the platform may not see; undefined when none is left. */
function keptCookies(header: string, policy: HeaderPolicy): string | undefined {
  const kept = header
    .split(';')
    .map((part) => part.trim())
    .filter((part) => part && policy.keepsCookie(part.slice(0, part.indexOf('=') >>> 0).trim()));
  return kept.length ? kept.join('; ') : undefined;
}

export interface ForwardedIdentity {
  user: string;
  email?: string;
  keyId?: string;
  client?: string;
  groups?: readonly string[];
}

/** What the gateway knows of one request, passed on to the platform. */
export interface ForwardContext {
  clientAddress: string;
  publicProto: string;
  publicHost: string;
  requestId: string;
  identity?: ForwardedIdentity;
}

/** The headers the platform receives: the client's, minus anything spoofable, plus the gateway's truth. */
export function buildUpstreamHeaders(
  incoming: IncomingHttpHeaders,
  context: ForwardContext,
  policy: HeaderPolicy,
): Record<string, string | string[]> {
  const connectionListed =
    incoming.connection === undefined
      ? undefined
      : new Set(
          incoming.connection
            .split(',')
            .map((name) => canonical(name.trim()))
            .filter(Boolean),
        );
  const headers: Record<string, string | string[]> = {};
  for (const name in incoming) {
    const value = incoming[name];
    if (value === undefined || policy.isStripped(name) || connectionListed?.has(canonical(name))) continue;
    if (name === 'cookie') {
      const cookie = policy.dropsCookies ? undefined : keptCookies(String(value), policy);
      if (cookie) headers.cookie = cookie;
      continue;
    }
    headers[name] = value;
  }
  headers['x-forwarded-for'] = context.clientAddress;
  headers['x-forwarded-proto'] = context.publicProto;
  headers['x-forwarded-host'] = context.publicHost;
  headers['x-request-id'] = context.requestId;
  if (context.identity) {
    headers['x-forwarded-user'] = context.identity.user;
    if (context.identity.email) headers['x-forwarded-email'] = context.identity.email;
    if (context.identity.keyId) headers['x-forwarded-key-id'] = context.identity.keyId;
    if (context.identity.client) headers['x-forwarded-client'] = context.identity.client;
    if (context.identity.groups?.length) headers['x-forwarded-groups'] = context.identity.groups.join(',');
  }
  if (policy.upstreamApiKey) headers.authorization = `Bearer ${policy.upstreamApiKey}`;
  return headers;
}

/**
 * The headers the client receives from the platform: all but the per-connection ones, and the
 * request id the gateway logged and passed on in place of the platform's. Set here rather than on
 * the response beforehand: a response with no header set yet writes its head from this object as
 * it is, without copying it header by header.
 */
export function buildClientHeaders(
  upstream: IncomingHttpHeaders,
  requestId: string,
): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const name in upstream) {
    const value = upstream[name];
    if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
  }
  headers['x-request-id'] = requestId;
  return headers;
}
