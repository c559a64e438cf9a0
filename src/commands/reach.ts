/**
 * Why a server could not be reached, in words an operator can act on. Node's fetch says only
 * "fetch failed" and ioredis "Connection is closed."; the system or TLS error that explains it is
 * further down the `cause` chain (or, for ioredis, in the last `error` event).
 */

export interface ReachFailure {
  /** e.g. "nothing listens at 127.0.0.1:8000 (ECONNREFUSED)". */
  cause: string;
  /** What to look at, for that cause. */
  fix: string;
}

const TIMEOUTS = new Set(['ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);
const CLOSED = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);
const TLS = /CERT|SSL|TLS|EPROTO|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/;
/** Bounds the walk: a cause chain is a few links, never a cycle worth following. */
const MAX_CAUSES = 8;

const DEFAULT_PORTS: Record<string, string> = {
  'http:': '80',
  'https:': '443',
  'redis:': '6379',
  'rediss:': '6379',
  'postgres:': '5432',
  'postgresql:': '5432',
};

/** `host:port` of a URL, the port spelt out where it is the scheme's default; never the password. */
export function addressOf(url: string | URL): string {
  const parsed = new URL(url);
  return `${parsed.hostname || 'localhost'}:${parsed.port || DEFAULT_PORTS[parsed.protocol] || '?'}`;
}

/** Describes `error`, met while reaching `address`, by the most telling error along its causes. */
export function describeReachFailure(error: unknown, address: string): ReachFailure {
  const chain: Error[] = [];
  for (let at = error; at instanceof Error && chain.length < MAX_CAUSES; at = at.cause) chain.push(at);
  for (const link of chain) {
    const code = (link as { code?: unknown }).code;
    if (typeof code !== 'string') continue;
    if (code === 'ECONNREFUSED') {
      return { cause: `nothing listens at ${address} (ECONNREFUSED)`, fix: 'start it, or correct the host and port' };
    }
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
      return {
        cause: `the host name of ${address} does not resolve (${code})`,
        fix: 'correct the host name, or check DNS from this host',
      };
    }
    if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
      return { cause: `no route to ${address} (${code})`, fix: 'check the network between this host and it' };
    }
    if (TIMEOUTS.has(code)) {
      return {
        cause: `no answer from ${address} in time (${code})`,
        fix: 'check that a firewall or network policy lets this host reach it',
      };
    }
    if (TLS.test(code)) {
      return {
        // The code says it (CERT_HAS_EXPIRED, ERR_SSL_WRONG_VERSION_NUMBER); OpenSSL's message adds only noise.
        cause: `TLS with ${address} failed (${code})`,
        fix: 'give it a certificate this host trusts (for a private CA: NODE_EXTRA_CA_CERTS=/path/to/ca.pem), or use http:// if it does not speak TLS',
      };
    }
    if (CLOSED.has(code)) {
      return {
        cause: `${address} closed the connection (${code})`,
        fix: 'check http:// against https:// and that this port is the right service',
      };
    }
  }
  if (chain.some((link) => link.name === 'TimeoutError' || link.name === 'AbortError')) {
    return {
      cause: `no answer from ${address} in time`,
      fix: 'check that a firewall or network policy lets this host reach it',
    };
  }
  const innermost = chain.at(-1);
  return {
    cause: `${address}: ${innermost ? innermost.message : String(error)}`,
    fix: 'check the address and that the service is running',
  };
}
