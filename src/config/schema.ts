import { z } from 'zod';

/** Key paths holding secrets: redacted by `config check`, described only by type in messages. */
export const SECRET_KEYS = [
  'auth_provider.client_secret',
  'gateway.upstream_api_key',
  'auth.key_hash_secret',
  'auth.test_token',
] as const;

/** Key paths holding URLs whose password part is a secret. */
export const URLS_WITH_PASSWORD = ['database.url', 'redis.url'] as const;

/** `${PORT}` always yields a string, so "8080" is accepted where an integer is expected. */
const toInteger = (value: unknown) =>
  typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;

/** Likewise "true"/"false", spelled as YAML 1.2 spells booleans. */
const toBoolean = (value: unknown) => {
  if (value === 'true' || value === 'True' || value === 'TRUE') return true;
  if (value === 'false' || value === 'False' || value === 'FALSE') return false;
  return value;
};

/** Absent or null both mean "not set", and come out as undefined. */
const optional = <T extends z.ZodType>(schema: T) =>
  z.preprocess((value) => value ?? undefined, schema.optional());

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

const auth = z.strictObject({
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
});

const gateway = z.strictObject({
  host: text().describe('a host name or address to listen on'),
  port: integer(0, 65535).describe('an integer from 0 to 65535'),
  upstream: baseUrl().describe('the http(s) base URL of the platform (e.g. http://127.0.0.1:8000)'),
  upstream_api_key: optional(text()).describe('a non-empty string'),
  data_dir: text().describe('a directory path'),
});

const database = z.strictObject({
  url: z
    .string()
    .regex(/^(sqlite:.+|postgres(ql)?:\/\/.+)$/)
    .describe('sqlite:PATH, sqlite::memory: or a postgres:// or postgresql:// URL'),
});

const redis = z.strictObject({
  url: optional(z.string().regex(/^rediss?:\/\/.+$/)).describe('a redis:// or rediss:// URL'),
});

/** Shape and format of each key; rules between keys live in rules.ts. */
export const configSchema = z.strictObject({
  auth,
  powerml,
  auth_provider: authProvider,
  gateway,
  database,
  redis,
});

/** The validated configuration; snake_case kept so operators and code use the same names. */
export interface Config extends z.output<typeof configSchema> {
  /** The edits file the values came from, or the name given to `loadConfigFromObject`. */
  source: string;
}

/** The schema of one key ("gateway.port") or section ("gateway"), for messages and rules. */
export function schemaAt(path: readonly string[]): z.ZodType | undefined {
  const sections: Record<string, z.ZodObject<Record<string, z.ZodType>>> = configSchema.shape;
  const [sectionName, key] = path;
  const section = sectionName === undefined ? undefined : sections[sectionName];
  return key === undefined ? section : section?.shape[key];
}
