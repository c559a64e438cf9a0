import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { describeValue } from './describe.js';

/** Key paths holding secrets: redacted by `config check`, described only by type in messages. */
export const SECRET_KEYS = [
  'auth_provider.client_secret',
  'gateway.upstream_api_key',
  'auth.key_hash_secret',
  'auth.test_token',
  'scim.token',
] as const;

/** Keys of each `auth_providers` item holding secrets. */
export const PROVIDER_SECRET_KEYS = ['client_secret'] as const;

/** Key paths holding URLs whose password part is a secret. */
export const URLS_WITH_PASSWORD = ['database.url', 'redis.url'] as const;

/** `${PORT}` always yields a string, so "8080" is accepted where an integer is expected. */
const toInteger = (value: unknown) => (typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value);

/** Likewise "true"/"false", spelled as YAML 1.2 spells booleans. */
const toBoolean = (value: unknown) => {
  if (value === 'true' || value === 'True' || value === 'TRUE') return true;
  if (value === 'false' || value === 'False' || value === 'FALSE') return false;
  return value;
};

/** Absent or null both mean "not set", and come out as undefined. */
const optional = <T extends z.ZodType>(schema: T) => z.preprocess((value) => value ?? undefined, schema.optional());

const boolean = () => z.preprocess(toBoolean, z.boolean()).describe('true or false');

const integer = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess(toInteger, z.number().int().min(min).max(max));

const text = (min = 1) => z.string().min(min);

/** Parses without throwing: `URL.parse` arrives only in Node 22. */
export function parseUrl(value: string): URL | undefined {
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
}

/** An absolute http(s) URL; a fragment is never meaningful here, a query only where allowed. */
const httpUrl = ({ query }: { query: boolean }) =>
  z.string().refine((value) => {
    const url = parseUrl(value);
    const scheme = url?.protocol === 'http:' || url?.protocol === 'https:';
    return scheme && !value.includes('#') && (query || !value.includes('?'));
  });

/** A base URL that paths are appended to, so a trailing slash would double up. */
const baseUrl = () => httpUrl({ query: false }).transform((value) => value.replace(/\/+$/, ''));

/**
 * Marks an issue about one list item whose message is written for the operator; problems.ts
 * prints it after the item's path (`gateway.public_paths[1] is not ...`) instead of the key's
 * generic description.
 */
export const ITEM_PROBLEM = 'gatehouse_item_problem';

/** A string checked by `problemWith`, which returns what is wrong with it, or undefined. */
const checkedString = (problemWith: (value: string) => string | undefined) =>
  z.string().superRefine((value, ctx) => {
    const problem = problemWith(value);
    if (problem !== undefined) {
      ctx.addIssue({ code: 'custom', message: problem, params: { [ITEM_PROBLEM]: true } });
    }
  });

/** A list; absent or null is the empty list. */
const list = <T extends z.ZodType>(item: T) => z.preprocess((value) => value ?? [], z.array(item));

/** Like `list`, but one string is a list of one, as older configurations wrote it. */
const oneOrList = <T extends z.ZodType>(item: T) =>
  z.preprocess((value) => (typeof value === 'string' ? [value] : (value ?? [])), z.array(item));

/** Lowercases A-Z only: `toLowerCase` maps some non-ASCII letters to ASCII (U+212A KELVIN SIGN to k). */
const asciiLowercase = (value: string) => value.replace(/[A-Z]/g, (letter) => letter.toLowerCase());

const unique = <T>(items: readonly T[]) => [...new Set(items)];

const DOMAIN_LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
const DOMAIN = new RegExp(`^\\.?${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})+$`);

const normaliseDomain = (value: string) => asciiLowercase(value).replace(/\.$/, '');

/**
 * An email domain, lowercased and without a trailing dot. ASCII only: an internationalised domain
 * is written in its xn-- form, as providers send it, so no Unicode lookalike can equal it.
 */
const emailDomain = () =>
  checkedString((value) => {
    const domain = normaliseDomain(value);
    if (domain.length <= 253 && DOMAIN.test(domain)) return undefined;
    return (
      'must be a domain name such as example.com, or .example.com for its subdomains ' +
      `(ASCII letters, digits, - and dots; write an internationalised domain as xn--), got ${describeValue(value, false)}`
    );
  }).transform(normaliseDomain);

/** What V8 says is wrong with a pattern, compiled with the flags policy/paths.ts uses. */
function regexProblem(pattern: string): string | undefined {
  if (pattern === '') return 'is empty, which would match every path';
  try {
    new RegExp(pattern, 'u');
    return undefined;
  } catch (error) {
    const reason = (error as Error).message.replace(/^Invalid regular expression: /, '');
    return `is not a valid regular expression: ${reason}`;
  }
}

/** An address (10.0.0.1, ::1) or a CIDR block (10.0.0.0/8, fd00::/8), as `node:net` reads them. */
function cidrProblem(value: string): string | undefined {
  const [address = '', prefix, ...rest] = value.split('/');
  const family = isIP(address);
  const bits = family === 4 ? 32 : 128;
  const prefixOk = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits);
  // A zone id (fe80::1%eth0) names an interface, which a peer address is never compared with.
  if (family !== 0 && prefixOk && rest.length === 0 && !address.includes('%')) {
    try {
      const blocks = new BlockList();
      const type = family === 4 ? 'ipv4' : 'ipv6';
      if (prefix === undefined) blocks.addAddress(address, type);
      else blocks.addSubnet(address, Number(prefix), type);
      return undefined;
    } catch {
      // Falls through to the same message: node:net cannot read it either.
    }
  }
  return `must be an IP address or a CIDR block (e.g. 10.0.0.0/8 or fd00::/8), got ${describeValue(value, false)}`;
}

/**
 * A claim name, or a dotted path into nested claims (realm_access.roles). A URL claim name
 * (https://example.com/groups) is allowed: policy/groups.ts tries the whole name first.
 */
const CLAIM_PATH = /^[^.\s\p{Cc}]+(?:\.[^.\s\p{Cc}]+)*$/u;

/** Algorithms a trusted issuer may sign with: asymmetric only, so no one holding the public key can sign (never `none`, never HMAC). */
export const JWT_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;

/** The scopes a machine may be granted: the platform ones; `keys` and `admin` belong to people. */
const MACHINE_SCOPES = ['inference', 'training', 'read', 'all'] as const;

/** A name shown in `service:<name>/<subject>`: no `/` or `:`, so the identity reads one way. */
const ISSUER_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** `${SPEND}` yields a string too, so "12.5" is accepted where a number is expected. */
const toNumber = (value: unknown) => (typeof value === 'string' && /^\d+(\.\d+)?$/.test(value) ? Number(value) : value);

const amount = () => z.preprocess(toNumber, z.number().min(0).finite());

/** One budget: tokens, spend (in budgets.currency) or both, over a calendar period. */
const budget = z
  .strictObject({
    tokens: optional(integer(1)).describe('an integer of at least 1 (prompt + completion tokens)'),
    spend: optional(amount()).describe('a number of at least 0 (in budgets.currency)'),
    period: z.preprocess((value) => value ?? 'month', z.enum(['day', 'week', 'month'])).describe('day, week or month'),
  })
  .refine((value) => value.tokens !== undefined || value.spend !== undefined, {
    message: 'needs tokens, spend or both',
  })
  .describe('a mapping with tokens and/or spend, and period (day, week or month)');

/** A claim value rule: one glob or a list of globs (see identity/jwt-bearer.ts for `*` and `**`). */
const globs = z
  .union([text(), z.array(text()).min(1)])
  .transform((value) => (typeof value === 'string' ? [value] : value));

const trustedIssuerFields = z
  .strictObject({
    name: z
      .string()
      .regex(
        ISSUER_NAME,
        'must be lowercase letters, digits, ".", "_" or "-" (it is shown as service:<name>/<subject>)',
      ),
    issuer: text(),
    discovery: optional(boolean()),
    jwks_uri: optional(httpUrl({ query: true })),
    audience: text(),
    subject_claim: optional(z.string().regex(CLAIM_PATH)),
    allowed_subjects: optional(globs),
    allowed_claims: optional(z.record(z.string().regex(CLAIM_PATH), globs)),
    scopes: optional(z.array(z.enum(MACHINE_SCOPES)).min(1)),
    scope_claim: optional(z.string().regex(CLAIM_PATH)),
    scope_map: optional(z.record(text(), z.enum(MACHINE_SCOPES))),
    models: optional(z.array(text()).min(1).max(100)),
    requests_per_minute: optional(integer(1)),
    tokens_per_minute: optional(integer(1)),
    algorithms: optional(z.array(z.enum(JWT_ALGORITHMS)).min(1)),
    budget: optional(budget),
  })
  .superRefine((entry, ctx) => {
    const problem = (message: string) => ctx.addIssue({ code: 'custom', message, params: { [ITEM_PROBLEM]: true } });
    if ((entry.discovery === true) === (entry.jwks_uri !== undefined)) {
      problem(
        'needs exactly one source of keys: discovery: true (reads <issuer>/.well-known/openid-configuration) or jwks_uri',
      );
    }
    if (!entry.scopes && !entry.scope_claim) {
      problem('needs scopes (granted to every token) or scope_claim (the claim whose values are granted), or both');
    }
  });

/** `auth.trusted_issuers[0].audience must be ...`: each field named, with what it expects. */
const TRUSTED_ISSUER_FIELDS: Record<string, string> = {
  name: 'a lowercase name (letters, digits, ".", "_", "-") shown as service:<name>/<subject>',
  issuer: 'the exact iss of the tokens',
  discovery: 'true or false',
  jwks_uri: 'an http(s) URL of the JSON Web Key Set',
  audience: 'the aud every token must contain',
  subject_claim: 'a claim name (default sub)',
  allowed_subjects: 'a glob or a list of globs',
  allowed_claims: 'a mapping of claim names to a glob or a list of globs (e.g. repository: "org/*")',
  scopes: `a list of ${MACHINE_SCOPES.join(', ')}`,
  scope_claim: 'a claim name such as scope or scp',
  scope_map: `a mapping of claim values to one of ${MACHINE_SCOPES.join(', ')}`,
  models: 'a list of 1 to 100 model names',
  requests_per_minute: 'an integer of at least 1',
  tokens_per_minute: 'an integer of at least 1',
  algorithms: `a list of ${JWT_ALGORITHMS.join(', ')}`,
  budget: 'a mapping with tokens and/or spend, and period (day, week or month), given to each subject',
};

/** One entry of auth.trusted_issuers; its problems are reported per field, not as "the list is wrong". */
const trustedIssuer = z.unknown().transform((value, ctx) => {
  const parsed = trustedIssuerFields.safeParse(value);
  if (parsed.success) return parsed.data;
  for (const issue of parsed.error.issues) {
    const [field] = issue.path.map(String);
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') {
      message = `has unknown keys ${issue.keys.join(', ')} (known: ${Object.keys(TRUSTED_ISSUER_FIELDS).join(', ')})`;
    } else if (field !== undefined && !(issue.code === 'custom' && issue.params?.[ITEM_PROBLEM])) {
      const expected = TRUSTED_ISSUER_FIELDS[field] ?? 'a valid value';
      const given = value && typeof value === 'object' ? (value as Record<string, unknown>)[field] : undefined;
      message = given === undefined || given === null ? `is missing (expected ${expected})` : `must be ${expected}`;
    }
    ctx.addIssue({
      code: 'custom',
      message,
      path: issue.code === 'unrecognized_keys' ? [] : issue.path.slice(0, 1),
      params: { [ITEM_PROBLEM]: true },
    });
  }
  return z.NEVER;
});

export type TrustedIssuerConfig = z.output<typeof trustedIssuerFields>;

/** RFC 8628 device authorization, served by the gateway itself. */
const deviceFlow = z
  .strictObject({
    code_seconds: integer(5, 3600).describe('an integer from 5 to 3600 (seconds)'),
    poll_interval_seconds: integer(1, 60).describe('an integer from 1 to 60 (seconds)'),
    key_days: integer(1, 3650).describe('an integer from 1 to 3650 (days)'),
    codes_per_minute: integer(1, 10_000).describe('an integer from 1 to 10000'),
  })
  .describe('a mapping with code_seconds, poll_interval_seconds, key_days and codes_per_minute');

const authKeys = z.strictObject({
  disable_auth: boolean(),
  session_idle_minutes: integer(1).describe('an integer of at least 1'),
  session_max_hours: integer(1).describe('an integer of at least 1'),
  api_key_prefix: z
    .string()
    .regex(/^[a-z][a-z0-9]{1,9}_$/)
    .describe('a lowercase letter, then 1 to 9 lowercase letters or digits, then _ (e.g. "gth_")'),
  key_hash_secret: optional(text(32)).describe('a string of at least 32 characters'),
  api_key_max_days: optional(integer(1)).describe('an integer of at least 1'),
  test_token: optional(text(20)).describe('a string of at least 20 characters'),
  test_token_email: optional(z.email()).describe('an email address'),
  failed_auth_per_minute: integer(0).describe('an integer of at least 0 (0 turns the limit off)'),
  allowed_email_domains: list(emailDomain()).describe(
    'a list of email domains (example.com, or .example.com for its subdomains)',
  ),
  /** The legacy Lamini name for allowed_email_domains: one domain or a list. */
  google_whitelist: oneOrList(emailDomain()).describe('a domain or a list of domains'),
  allow_unverified_email: boolean(),
  /** Unset, it follows the email rules: an email is needed to apply them. */
  require_email: optional(boolean()),
  google_workspace_domain: optional(emailDomain()).describe(
    'a Google Workspace domain such as example.com (Google’s hd claim must name it)',
  ),
  allowed_groups: list(text()).describe('a list of non-empty group names'),
  admin_emails: list(z.email().transform(asciiLowercase)).describe('a list of email addresses'),
  admin_groups: list(text()).describe('a list of non-empty group names'),
  scope_paths: z
    .strictObject({
      inference: list(checkedString(regexProblem)).describe('a list of regular expressions'),
      training: list(checkedString(regexProblem)).describe('a list of regular expressions'),
    })
    .describe('a mapping with the lists inference and training'),
  key_requests_per_minute: integer(0).describe('an integer of at least 0 (0 means no limit)'),
  key_tokens_per_minute: integer(0).describe('an integer of at least 0 (0 means no limit)'),
  max_key_requests_per_minute: integer(0).describe('an integer of at least 0 (0 means no cap)'),
  max_key_tokens_per_minute: integer(0).describe('an integer of at least 0 (0 means no cap)'),
  user_requests_per_minute: integer(0).describe('an integer of at least 0 (0 means no limit)'),
  user_tokens_per_minute: integer(0).describe('an integer of at least 0 (0 means no limit)'),
  max_keys_per_user: integer(1, 100_000).describe('an integer from 1 to 100000'),
  recheck_minutes: integer(1, 10_080).describe('an integer from 1 to 10080 (minutes)'),
  trusted_issuers: list(trustedIssuer).describe(
    'a list of issuers, each with name, issuer, audience, discovery: true or jwks_uri, and scopes or scope_claim',
  ),
  device: deviceFlow,
});

/**
 * google_whitelist's entries join allowed_email_domains, the only one of the two that code
 * reads; the alias stays in Config so `config check` still shows what the file said.
 */
const auth = authKeys.overwrite((section) => {
  const allowed_email_domains = unique([...section.allowed_email_domains, ...section.google_whitelist]);
  const emailRules = allowed_email_domains.length > 0 || section.admin_emails.length > 0;
  return { ...section, allowed_email_domains, require_email: section.require_email ?? emailRules };
});

const powerml = z.strictObject({
  website: optional(baseUrl()).describe(
    'an absolute http(s) URL without query or fragment (e.g. https://llm.example.com)',
  ),
});

const authProvider = z.strictObject({
  client_id: optional(text()).describe('a non-empty string'),
  client_secret: optional(text()).describe('a non-empty string'),
  server_metadata_url: optional(httpUrl({ query: true })).describe(
    'the http(s) URL of the discovery document (e.g. https://id.example.com/.well-known/openid-configuration)',
  ),
  scopes: z
    .array(text())
    .refine((scopes) => scopes.includes('openid'))
    .describe('a list of scope names that includes openid'),
  allow_insecure_http: boolean(),
  token_endpoint_auth_method: optional(z.enum(['client_secret_basic', 'client_secret_post'])).describe(
    'client_secret_basic or client_secret_post',
  ),
  end_session_url: optional(httpUrl({ query: true })).describe(
    'an http(s) URL with {client_id}, {post_logout_redirect_uri}, {state} or {id_token_hint} placeholders (e.g. https://DOMAIN.auth.REGION.amazoncognito.com/logout?client_id={client_id}&logout_uri={post_logout_redirect_uri})',
  ),
  groups_claim: z
    .string()
    .regex(CLAIM_PATH)
    .describe('a claim name or a dotted path to one (e.g. groups or realm_access.roles)'),
});

/** A provider id: it names the provider in URLs (`/v1/auth/auth/<id>`, `?provider=<id>`). */
export const PROVIDER_ID = /^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$/;

/**
 * One item of `auth_providers`: the keys of `auth_provider` (whose defaults it starts from), an id
 * and a display name, and the sign-in rules that may differ per provider; a rule left out is the
 * `auth` section's.
 */
const listedProvider = authProvider.extend({
  id: z
    .string()
    .regex(PROVIDER_ID)
    .describe('a slug of 1 to 32 lowercase letters, digits and - (e.g. google), used in /v1/auth/auth/<id>'),
  name: text().max(80).describe('a display name of at most 80 characters for the sign-in chooser (e.g. Google)'),
  client_id: text().describe('a non-empty string'),
  client_secret: text().describe('a non-empty string'),
  server_metadata_url: httpUrl({ query: true }).describe(
    'the http(s) URL of the discovery document (e.g. https://id.example.com/.well-known/openid-configuration)',
  ),
  allowed_email_domains: optional(z.array(emailDomain())).describe(
    'a list of email domains (example.com, or .example.com for its subdomains)',
  ),
  allow_unverified_email: optional(boolean()),
  require_email: optional(boolean()),
  google_workspace_domain: optional(emailDomain()).describe(
    'a Google Workspace domain such as example.com (Google’s hd claim must name it)',
  ),
  allowed_groups: optional(z.array(text())).describe('a list of non-empty group names'),
  admin_emails: optional(z.array(z.email().transform(asciiLowercase))).describe('a list of email addresses'),
  admin_groups: optional(z.array(text())).describe('a list of non-empty group names'),
});

export type ListedProvider = z.output<typeof listedProvider>;

/**
 * Ids name callback URLs, so two providers cannot share one. Nor a discovery document: users are
 * keyed by issuer and subject, so two clients at one provider would share users, and a session
 * could not tell which client's credentials refresh it.
 */
const authProviders = z
  .array(listedProvider)
  .min(1)
  .superRefine((providers, ctx) => {
    const unique = (key: 'id' | 'server_metadata_url', why: string) => {
      const seen = new Map<string, number>();
      providers.forEach((provider, index) => {
        const first = seen.get(provider[key]);
        if (first === undefined) seen.set(provider[key], index);
        else
          ctx.addIssue({
            code: 'custom',
            path: [index, key],
            message: `is "${provider[key]}", already the ${key} of auth_providers[${first}]: ${why}`,
            params: { [ITEM_PROBLEM]: true },
          });
      });
    };
    unique('id', 'each provider needs its own id (it names its callback URL)');
    unique(
      'server_metadata_url',
      'users are keyed by issuer and subject, so two clients at one provider would share users; configure it once',
    );
  })
  .describe('a list of providers, each a mapping with id, name, client_id, client_secret and server_metadata_url');

/** RFC 9110 5.1 field names; a trailing * makes it a prefix. */
const HEADER_NAME_OR_PREFIX = /^[!#$%&'+.^_`|~0-9A-Za-z-]+\*?$/;
/** RFC 6265 4.1.1 cookie names (tokens). */
const COOKIE_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const gateway = z.strictObject({
  host: text().describe('a host name or address to listen on'),
  port: integer(0, 65535).describe('an integer from 0 to 65535'),
  upstream: baseUrl().describe('the http(s) base URL of the platform (e.g. http://127.0.0.1:8000)'),
  upstream_api_key: optional(text()).describe('a non-empty string'),
  data_dir: text().describe('a directory path'),
  public_paths: list(checkedString(regexProblem)).describe('a list of regular expressions'),
  admin_paths: list(checkedString(regexProblem)).describe('a list of regular expressions'),
  trusted_proxies: list(checkedString(cidrProblem)).describe('a list of IP addresses or CIDR blocks (e.g. 10.0.0.0/8)'),
  log_level: z
    .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal'])
    .describe('one of trace, debug, info, warn, error, fatal'),
  access_log: boolean(),
  metrics_port: optional(integer(0, 65535)).describe('an integer from 0 to 65535'),
  metrics_host: text().describe('a host name or address for the metrics listener'),
  metrics_models: list(text()).describe('a list of model names'),
  shutdown_grace_seconds: integer(0, 3600).describe('an integer from 0 to 3600'),
  upstream_headers_timeout_seconds: integer(1, 86400).describe('an integer from 1 to 86400'),
  upstream_idle_timeout_seconds: integer(1, 86400).describe('an integer from 1 to 86400'),
  forward_auth_skip_body_controls: boolean(),
  max_checked_body_mb: integer(1, 256).describe('an integer from 1 to 256 (MiB)'),
  strip_headers: list(z.string().regex(HEADER_NAME_OR_PREFIX)).describe(
    'a list of header names, each optionally ending in * for a prefix (e.g. X-Company-User, X-Company-*)',
  ),
  upstream_cookies: z
    .union([z.enum(['all', 'none']), z.array(z.string().regex(COOKIE_NAME)).min(1)])
    .describe('all, none, or a list of cookie names'),
  workers: z
    .union([z.literal('auto'), z.number().int().min(1).max(256)])
    .describe('an integer from 1 to 256, or auto (one per available core)'),
});

const database = z.strictObject({
  url: z
    .string()
    .regex(/^(sqlite:.+|postgres(ql)?:\/\/.+)$/)
    .describe('sqlite:PATH, sqlite::memory: or a postgres:// or postgresql:// URL'),
  schema: optional(z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/)).describe(
    'a PostgreSQL schema name: lowercase letters, digits and _ (e.g. gatehouse)',
  ),
  pool_size: integer(1, 1000).describe('an integer from 1 to 1000'),
  statement_timeout_ms: integer(0).describe('an integer of at least 0 (milliseconds; 0 means none)'),
  auto_migrate: boolean(),
});

const redis = z.strictObject({
  url: optional(z.string().regex(/^rediss?:\/\/.+$/)).describe('a redis:// or rediss:// URL'),
  key_prefix: z
    .string()
    .regex(/^[A-Za-z0-9:_-]{1,64}$/)
    .describe('letters, digits, :, _ or -, at most 64 characters (e.g. "gatehouse:")'),
});

const scim = z.strictObject({
  enabled: boolean(),
  token: optional(text(32)).describe('a string of at least 32 characters (e.g. ${SCIM_TOKEN})'),
});

function timeZoneProblem(value: string): string | undefined {
  try {
    new Intl.DateTimeFormat('en', { timeZone: value });
    return undefined;
  } catch {
    return `must be an IANA time zone such as UTC or Europe/Paris, got ${describeValue(value, false)}`;
  }
}

const budgets = z.strictObject({
  enabled: optional(boolean()),
  currency: z
    .string()
    .regex(/^[A-Z]{3}$/)
    .describe('a three-letter currency code such as USD'),
  prices: z
    .preprocess(
      (value) => value ?? {},
      z.record(
        text(),
        z.strictObject({
          input: amount().describe('a number of at least 0 (per million input tokens)'),
          output: amount().describe('a number of at least 0 (per million output tokens)'),
        }),
      ),
    )
    .describe('a mapping of model names to {input, output} prices per million tokens'),
  time_zone: checkedString(timeZoneProblem).describe('an IANA time zone such as UTC or Europe/Paris'),
  per_user: optional(budget),
  groups: z
    .preprocess((value) => value ?? {}, z.record(text(), budget))
    .describe('a mapping of group names to budgets'),
  cut_streams: boolean(),
  reserve_tokens: integer(1).describe('an integer of at least 1 (tokens reserved when a request names no max_tokens)'),
  reserve_tokens_per_model: z
    .preprocess((value) => value ?? {}, z.record(text(), integer(1)))
    .describe('a mapping of model names to token counts'),
  reservation_seconds: integer(10, 86_400).describe('an integer from 10 to 86400 (seconds)'),
});

/** Shape and format of each key; rules between keys live in rules.ts. */
export const configSchema = z.strictObject({
  auth,
  powerml,
  auth_provider: authProvider,
  auth_providers: optional(authProviders),
  gateway,
  database,
  redis,
  scim,
  budgets,
});

/** What commands that only reach the database read: no provider or website, the platform optional. */
export const databaseConfigSchema = z.strictObject({
  auth,
  gateway: gateway.extend({ upstream: optional(baseUrl()) }),
  database,
  redis,
});

/** The part of the configuration `gatehouse keys` needs; a full Config is one too. */
export interface DatabaseConfig extends z.output<typeof databaseConfigSchema> {
  source: string;
}

/** The validated configuration; snake_case kept so operators and code use the same names. */
export interface Config extends z.output<typeof configSchema> {
  /** The edits file the values came from, or the name given to `loadConfigFromObject`. */
  source: string;
}

/**
 * One provider people sign in with, its sign-in rules resolved: its own where it sets them, else
 * the `auth` section's.
 */
export interface SignInProvider extends ListedProvider {
  /** The single `auth_provider` block, whose callback stays /v1/auth/auth. */
  shorthand: boolean;
  allowed_email_domains: string[];
  allow_unverified_email: boolean;
  require_email: boolean;
  allowed_groups: string[];
  admin_emails: string[];
  admin_groups: string[];
}

/** What signing people in needs; present exactly when sign-in is on. */
export interface SignInSettings {
  website: string;
  /** One or more, in the order the chooser shows them. */
  providers: SignInProvider[];
}

/** The id the single `auth_provider` block gets. */
export const SHORTHAND_PROVIDER_ID = 'default';

/**
 * Sign-in is on unless auth is disabled, and then the rules (rules.ts) have made sure the provider
 * settings are present: this is that guarantee as a type, so nothing downstream asserts it.
 */
export function signInSettingsOf(config: Config): SignInSettings | undefined {
  const { website } = config.powerml;
  if (config.auth.disable_auth || !website) return undefined;
  const providers = config.auth_providers?.map((provider) => withRules(config, provider, false));
  if (providers) return { website, providers };
  const { client_id, client_secret, server_metadata_url } = config.auth_provider;
  if (!client_id || !client_secret || !server_metadata_url) return undefined;
  const single = {
    ...config.auth_provider,
    id: SHORTHAND_PROVIDER_ID,
    name: new URL(server_metadata_url).host,
    client_id,
    client_secret,
    server_metadata_url,
  };
  return { website, providers: [withRules(config, single, true)] };
}

function withRules(config: Config, provider: ListedProvider, shorthand: boolean): SignInProvider {
  const { auth } = config;
  const ownEmailRules = provider.allowed_email_domains !== undefined || provider.admin_emails !== undefined;
  const allowed = provider.allowed_email_domains ?? auth.allowed_email_domains;
  const admins = provider.admin_emails ?? auth.admin_emails;
  return {
    ...provider,
    shorthand,
    allowed_email_domains: allowed,
    allow_unverified_email: provider.allow_unverified_email ?? auth.allow_unverified_email,
    // Unset, it follows the email rules that apply to this provider, as auth.require_email does.
    require_email:
      provider.require_email ?? (ownEmailRules ? allowed.length > 0 || admins.length > 0 : auth.require_email === true),
    google_workspace_domain: provider.google_workspace_domain ?? auth.google_workspace_domain,
    allowed_groups: provider.allowed_groups ?? auth.allowed_groups,
    admin_emails: admins,
    admin_groups: provider.admin_groups ?? auth.admin_groups,
  };
}

/**
 * The schema of one key ("gateway.port") or section ("gateway"), for messages and rules; in
 * `auth_providers`, a position then a key (["auth_providers", 0, "client_id"]).
 */
export function schemaAt(path: readonly (string | number)[]): z.ZodType | undefined {
  const { auth_providers: _listed, ...objects } = configSchema.shape;
  const sections: Record<string, z.ZodObject<Record<string, z.ZodType>>> = objects;
  const [sectionName, key, itemKey] = path.map(String);
  if (sectionName === 'auth_providers') {
    if (key === undefined) return authProviders;
    return itemKey === undefined ? listedProvider : listedProvider.shape[itemKey as keyof ListedProvider];
  }
  const section = sectionName === undefined ? undefined : sections[sectionName];
  return key === undefined ? section : section?.shape[key];
}
