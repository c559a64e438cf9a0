import { resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { describeValue } from './describe.js';
import { interpolateEnv } from './interpolate.js';
import { describeIssues, describeMisspeltSections } from './problems.js';
import { checkRules } from './rules.js';
import { configSchema, type Config } from './schema.js';
import { OWNED_SECTIONS, isMapping, mergeEdits, pickOwnedSections } from './tree.js';
import { defaultsFilePath, readYamlFile } from './yaml.js';

/** Where the operator's edits are: `--config FILE`, else GATEHOUSE_CONFIG, else the working directory. */
export function resolveConfigPath(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(flag || env.GATEHOUSE_CONFIG || './llama_config_edits.yaml');
}

/** Reads the operator's edits file and returns the validated configuration over the defaults. */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  const edits = readYamlFile(path, 'create it, or pass another with --config FILE or GATEHOUSE_CONFIG');
  return loadConfigFromObject(edits, path, env);
}

/**
 * The same pipeline over edits already in memory: keep Gatehouse's sections, merge over the
 * defaults, interpolate `${ENV}`, validate. Every problem found is reported in one error, so an
 * operator fixes the file in one pass.
 */
export function loadConfigFromObject(edits: unknown, sourceName: string, env: NodeJS.ProcessEnv = process.env): Config {
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
  const merged = mergeEdits(defaults, pickOwnedSections(edits ?? {}));
  const { value: tree, problems: unset } = interpolateEnv(merged, env);
  const parsed = configSchema.safeParse(tree);
  const problems = [
    ...describeMisspeltSections(edits ?? {}),
    ...unset.map((problem) => problem.message),
    ...(parsed.success ? [] : describeIssues(parsed.error.issues, tree, new Set(unset.map((p) => p.key)))),
    ...checkRules(tree),
  ];
  if (!parsed.success || problems.length > 0) throw invalid(sourceName, problems);
  return { source: sourceName, ...parsed.data };
}

function invalid(source: string, problems: string[]): ConfigError {
  const lines = [...new Set(problems)].sort().map((problem) => `\n  - ${problem}`);
  return new ConfigError(`${source}: invalid configuration${lines.join('')}`);
}
