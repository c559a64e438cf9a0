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
 * asked for". The client may not set any of them; the gateway sets its own. Names are compared
 * after lower-casing and mapping `_` to `-`, because some servers treat those as the same header.
 */
const SPOOFABLE = new Set([
  'authorization',
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'true-client-ip',
  'remote-user',
  'x-remote-user',
  'x-remote-email',
  'x-remote-groups',
  'x-user',
  'x-email',
  'x-user-id',
  'x-original-url',
  'x-original-uri',
  'x-rewrite-url',
  'host',
  'expect',
]);
const SPOOFABLE_PREFIXES = ['x-forwarded-', 'x-auth-request-', 'x-gatehouse-'];

function canonical(name: string): string {
  return name.toLowerCase().replaceAll('_', '-');
}

function isSpoofable(name: string): boolean {
  const key = canonical(name);
  return HOP_BY_HOP.has(key) || SPOOFABLE.has(key) || SPOOFABLE_PREFIXES.some((prefix) => key.startsWith(prefix));
}

/**
 * Clients send the same few header names on every request; their verdicts are kept so that each
 * name is judged once. Bounded, so a client inventing names cannot grow it.
 */
const verdicts = new Map<string, boolean>();
const MAX_VERDICTS = 512;

function isSpoofableCached(name: string): boolean {
  let verdict = verdicts.get(name);
  if (verdict === undefined) {
    verdict = isSpoofable(name);
    if (verdicts.size < MAX_VERDICTS) verdicts.set(name, verdict);
  }
  return verdict;
}

/** Removes the named cookies from a Cookie header, keeping the platform's own. */
function withoutCookies(header: string, names: readonly string[]): string | undefined {
  const kept = header
    .split(';')
    .map((part) => part.trim())
    .filter((part) => part && !names.includes(part.slice(0, part.indexOf('=') >>> 0).trim()));
  return kept.length ? kept.join('; ') : undefined;
}

export interface ForwardedIdentity {
  user: string;
  email?: string;
  keyId?: string;
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

/** What the gateway adds to or removes from every request. */
export interface GatewayHeaderRules {
  upstreamApiKey?: string;
  gatewayCookies: readonly string[];
}

/** The headers the platform receives: the client's, minus anything spoofable, plus the gateway's truth. */
export function buildUpstreamHeaders(
  incoming: IncomingHttpHeaders,
  context: ForwardContext,
  rules: GatewayHeaderRules,
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
    if (value === undefined || isSpoofableCached(name) || connectionListed?.has(canonical(name))) continue;
    if (name === 'cookie') {
      const cookie = withoutCookies(String(value), rules.gatewayCookies);
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
    if (context.identity.groups?.length) headers['x-forwarded-groups'] = context.identity.groups.join(',');
  }
  if (rules.upstreamApiKey) headers.authorization = `Bearer ${rules.upstreamApiKey}`;
  return headers;
}

/** The headers the client receives from the platform: all but the per-connection ones. */
export function buildClientHeaders(upstream: IncomingHttpHeaders): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const name in upstream) {
    const value = upstream[name];
    if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
  }
  return headers;
}
