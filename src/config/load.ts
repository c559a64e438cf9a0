import { resolve } from 'node:path';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { describeValue } from './describe.js';
import { interpolateEnv } from './interpolate.js';
import { describeIssues, describeMisspeltSections } from './problems.js';
import { checkRules } from './rules.js';
import { configSchema, databaseConfigSchema, type Config, type DatabaseConfig } from './schema.js';
import { OWNED_SECTIONS, isMapping, mergeEdits, pickOwnedSections, type Mapping } from './tree.js';
import { defaultsFilePath, readYamlFile } from './yaml.js';

/** Where the operator's edits are: `--config FILE`, else GATEHOUSE_CONFIG, else the working directory. */
export function resolveConfigPath(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(flag || env.GATEHOUSE_CONFIG || './llama_config_edits.yaml');
}

/** Reads the operator's edits file and returns the validated configuration over the defaults. */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  return loadConfigFromObject(readEdits(path), path, env);
}

/**
 * Only what reaches the database (`auth`, `gateway`, `database`, `redis`), for commands that
 * manage keys: they need no provider, website or platform, so those are neither required nor read
 * (an unset `${VARIABLE}` there is no problem either).
 */
export function loadDatabaseConfig(path: string, env: NodeJS.ProcessEnv = process.env): DatabaseConfig {
  const parsed = validate(readEdits(path), path, env, databaseConfigSchema, DATABASE_SECTIONS, () => []);
  return { source: path, ...parsed };
}

const DATABASE_SECTIONS: readonly string[] = ['auth', 'gateway', 'database', 'redis'];

function readEdits(path: string): unknown {
  return readYamlFile(path, 'create it, or pass another with --config FILE or GATEHOUSE_CONFIG');
}

/**
 * The same pipeline over edits already in memory: keep Gatehouse's sections, merge over the
 * defaults, interpolate `${ENV}`, validate. Every problem found is reported in one error, so an
 * operator fixes the file in one pass.
 */
export function loadConfigFromObject(edits: unknown, sourceName: string, env: NodeJS.ProcessEnv = process.env): Config {
  return { source: sourceName, ...validate(edits, sourceName, env, configSchema, OWNED_SECTIONS, checkRules) };
}

/** Validates the `sections` of the edits over the defaults with `schema` and the rules between keys. */
function validate<T>(
  edits: unknown,
  sourceName: string,
  env: NodeJS.ProcessEnv,
  schema: z.ZodType<T>,
  sections: readonly string[],
  rules: (tree: unknown) => string[],
): T {
  const defaultsPath = defaultsFilePath();
  const defaults = readYamlFile(defaultsPath, 'it ships with Gatehouse: reinstall');
  if (!isMapping(defaults)) {
    throw invalid(defaultsPath, ['the top level must be a mapping of sections']);
  }
  // An empty file parses as null: no edits, so the required keys are reported as missing.
  if (edits != null && !isMapping(edits)) {
    const got = describeValue(edits, true);
    throw invalid(sourceName, [
      `the top level must be a mapping of sections (${OWNED_SECTIONS.join(', ')}), got ${got}`,
    ]);
  }
  const owned = pickOwnedSections(edits ?? {});
  const merged = mergeEdits(defaults, owned) as Mapping;
  const used = Object.fromEntries(sections.map((section) => [section, merged[section]]));
  if (sections.includes('auth_providers')) used.auth_providers = withProviderDefaults(merged);
  const { value: tree, problems: unset } = interpolateEnv(used, env);
  const parsed = schema.safeParse(tree);
  const problems = [
    ...(sections.includes('auth_providers') ? describeProviderForms(owned) : []),
    ...describeMisspeltSections(edits ?? {}),
    ...unset.map((problem) => problem.message),
    ...(parsed.success ? [] : describeIssues(parsed.error.issues, tree, new Set(unset.map((p) => p.key)))),
    ...rules(tree),
  ];
  if (!parsed.success || problems.length > 0) throw invalid(sourceName, problems);
  return parsed.data;
}

/** Each `auth_providers` item starts from the defaults of `auth_provider` (scopes, groups claim, ...). */
function withProviderDefaults(merged: Mapping): unknown {
  const { auth_providers: providers, auth_provider: defaults } = merged;
  if (!Array.isArray(providers)) return providers;
  return providers.map((provider) => (isMapping(provider) ? mergeEdits(defaults, provider) : provider));
}

/** One provider is written as `auth_provider`, several as `auth_providers`; both at once is ambiguous. */
function describeProviderForms(owned: Mapping): string[] {
  if (owned.auth_provider == null || owned.auth_providers == null) return [];
  return [
    'auth_provider and auth_providers are both set: write one provider as auth_provider, or several as ' +
      'auth_providers; move the keys of auth_provider into an item of auth_providers (with an id and a name) ' +
      'and delete auth_provider',
  ];
}

function invalid(source: string, problems: string[]): ConfigError {
  const lines = [...new Set(problems)].sort().map((problem) => `\n  - ${problem}`);
  return new ConfigError(`${source}: invalid configuration${lines.join('')}`);
}
