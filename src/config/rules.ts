import { describeValue } from './describe.js';
import { parseUrl, schemaAt, type TrustedIssuerConfig } from './schema.js';
import { getAt } from './tree.js';

/** Needed to sign anyone in; unused when auth is disabled. */
const REQUIRED_WITH_AUTH = [
  'powerml.website',
  'auth_provider.client_id',
  'auth_provider.client_secret',
  'auth_provider.server_metadata_url',
] as const;

/** URLs that carry session cookies or the provider's tokens, which plain http exposes. */
const HTTPS_ONLY = ['powerml.website', 'auth_provider.server_metadata_url'] as const;

/**
 * Checks the rules between keys. They read the raw values through each key's own schema
 * rather than zod's result, so they still run when another key is wrong, and one run reports
 * every problem.
 */
export function checkRules(tree: unknown): string[] {
  const problems: string[] = [];
  const listed = getAt(tree, ['auth_providers']);
  const providers = Array.isArray(listed) ? listed : [];
  if (readValid(tree, 'auth.disable_auth') === false) {
    for (const path of REQUIRED_WITH_AUTH) {
      // With auth_providers, each item requires its own (schema.ts) and auth_provider is unused.
      if (listed == null && isUnset(tree, path)) {
        problems.push(`${path} is missing (required unless auth.disable_auth is true)`);
      }
    }
  }
  if (readValid(tree, 'scim.enabled') === true && readValid(tree, 'auth.disable_auth') === true) {
    problems.push('scim.enabled needs sign-in: SCIM provisions accounts, which auth.disable_auth: true turns off');
  }
  if (!isUnset(tree, 'auth.test_token') && isUnset(tree, 'auth.test_token_email')) {
    problems.push('auth.test_token_email is missing (required when auth.test_token is set)');
  }
  const insecureAllowed = readValid(tree, 'auth_provider.allow_insecure_http') === true;
  const httpsOnly: Array<[string, unknown, boolean, string]> = HTTPS_ONLY.map((path) => [
    path,
    readValid(tree, path),
    insecureAllowed,
    'auth_provider.allow_insecure_http',
  ]);
  providers.forEach((_provider, i) => {
    const at = `auth_providers[${i}]`;
    const allowed = readValid(tree, ['auth_providers', i, 'allow_insecure_http']) === true;
    httpsOnly.push([
      `${at}.server_metadata_url`,
      readValid(tree, ['auth_providers', i, 'server_metadata_url']),
      allowed,
      `${at}.allow_insecure_http`,
    ]);
    // The website carries the session cookies of every provider's users.
    if (allowed) httpsOnly[0]![2] = true;
  });
  for (const [path, url, allowed, allowKey] of httpsOnly) {
    if (typeof url === 'string' && !allowed && !isSafeUrl(url)) {
      problems.push(
        `${path} must use https, got ${describeValue(url, false)}: plain http is allowed only for a loopback ` +
          `host (localhost, 127.0.0.0/8, ::1) or with ${allowKey}: true`,
      );
    }
  }
  const upstream = readValid(tree, 'gateway.upstream');
  const url = typeof upstream === 'string' ? parseUrl(upstream) : undefined;
  const version = url && VERSION_PATH.exec(url.pathname);
  if (url && version) {
    problems.push(
      `gateway.upstream must be the platform's root URL, without ${version[0]}, got ${describeValue(upstream, false)}: ` +
        `the gateway appends the client's whole path, so /v1/chat/completions would reach the platform as ` +
        `${url.pathname}/v1/chat/completions; write ${url.origin}${url.pathname.slice(0, version.index)}`,
    );
  }
  problems.push(...trustedIssuerProblems(tree, insecureAllowed));
  const workers = readValid(tree, 'gateway.workers');
  if (
    (workers === 'auto' || (typeof workers === 'number' && workers > 1)) &&
    readValid(tree, 'database.url') === 'sqlite::memory:'
  ) {
    problems.push(
      `gateway.workers is ${describeValue(workers, false)} but database.url is sqlite::memory:, which each worker ` +
        'would open as a database of its own: use a file (sqlite:./gatehouse.db) or PostgreSQL, or gateway.workers: 1',
    );
  }
  return problems;
}

/** Where a trusted issuer's keys are fetched from decides whose tokens are believed: https, as for the provider. */
function trustedIssuerProblems(tree: unknown, insecureAllowed: boolean): string[] {
  const issuers = readValid(tree, 'auth.trusted_issuers') as TrustedIssuerConfig[] | undefined;
  return (issuers ?? []).flatMap((entry, index) => {
    const [key, url] = entry.jwks_uri ? ['jwks_uri', entry.jwks_uri] : ['issuer', entry.issuer];
    if (insecureAllowed || isSafeUrl(url)) return [];
    return [
      `auth.trusted_issuers[${index}].${key} must use https, got ${describeValue(url, false)}: its keys decide ` +
        'which tokens are believed; plain http is allowed only for a loopback host or with auth_provider.allow_insecure_http: true',
    ];
  });
}

/** An API version ending the upstream's path (`/v1`, `/openai/v1`): the client's path brings its own. */
const VERSION_PATH = /\/v\d+$/;

/** True for localhost, 127.0.0.0/8 and ::1, as `URL.hostname` spells them. */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

function isSafeUrl(value: string): boolean {
  const url = parseUrl(value);
  return url !== undefined && (url.protocol === 'https:' || isLoopbackHost(url.hostname));
}

function readValid(tree: unknown, key: string | (string | number)[]): unknown {
  const path = typeof key === 'string' ? key.split('.') : key;
  const result = schemaAt(path)?.safeParse(getAt(tree, path));
  return result?.success ? result.data : undefined;
}

function isUnset(tree: unknown, path: string): boolean {
  return getAt(tree, path.split('.')) == null;
}
