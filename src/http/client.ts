import type { IncomingMessage } from 'node:http';
import proxyAddr from 'proxy-addr';

export interface ClientAddressing {
  /** Whether a direct peer is one of `gateway.trusted_proxies` (IPs or CIDRs, IPv4 and IPv6). */
  isTrustedPeer(address: string | undefined): boolean;
  /** The client's address: the direct peer, or what trusted proxies say in X-Forwarded-For. */
  ip(request: IncomingMessage): string;
  /** The scheme the client used: X-Forwarded-Proto is believed from a trusted proxy only. */
  protocol(request: IncomingMessage): 'http' | 'https';
}

/**
 * `gateway.trusted_proxies` as proxy-addr takes them: it refuses a /0 block, so "every IPv4 (or
 * IPv6) peer" is given as the two halves of the address space instead.
 */
export function trustedRanges(entries: readonly string[]): string[] {
  return entries.flatMap((entry) => {
    if (/^0+(?:\.0+){3}\/0$/.test(entry)) return ['0.0.0.0/1', '128.0.0.0/1'];
    if (/^[0:]*::[0:]*\/0$/.test(entry)) return ['::/1', '8000::/1'];
    return [entry];
  });
}

/**
 * Who sent a request when proxies stand in front of the gateway. Uses proxy-addr, as Fastify does
 * for the gateway's own routes, so both paths see the same client for the same request; it also
 * maps IPv4 peers on a dual-stack socket (::ffff:a.b.c.d) onto IPv4 entries.
 */
export function createClientAddressing(trustedProxies: readonly string[]): ClientAddressing {
  const ownScheme = (request: IncomingMessage) =>
    (request.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  if (trustedProxies.length === 0) {
    return { isTrustedPeer: () => false, ip: (request) => request.socket.remoteAddress ?? '', protocol: ownScheme };
  }
  const trust = proxyAddr.compile(trustedRanges(trustedProxies));
  const isTrustedPeer = (address: string | undefined) => address !== undefined && trust(address, 0);
  return {
    isTrustedPeer,
    ip: (request) => proxyAddr(request, trust),
    protocol(request) {
      const forwarded = request.headers['x-forwarded-proto'];
      if (typeof forwarded !== 'string' || !isTrustedPeer(request.socket.remoteAddress)) return ownScheme(request);
      // Each proxy appends what it saw; the last entry is the one the trusted peer vouches for.
      const scheme = forwarded
        .slice(forwarded.lastIndexOf(',') + 1)
        .trim()
        .toLowerCase();
      return scheme === 'https' ? 'https' : 'http';
    },
  };
}
