import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { ConfigError } from '../errors.js';

/**
 * Reads one YAML file into plain values. Parsing uses YAML 1.2's core schema, where `true`,
 * `True` and `TRUE` are booleans and `yes`/`on` stay strings. Syntax errors give line and
 * column but no source excerpt: the offending line may hold a secret.
 */
export function readYamlFile(path: string, missingHint: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT'
        ? `configuration file not found; ${missingHint}`
        : `cannot read configuration file (${code ?? String(error)})`;
    throw new ConfigError(`${path}: ${reason}`, { cause: error });
  }
  const document = parseDocument(text);
  const [error] = document.errors;
  if (error) {
    const at = error.linePos?.[0];
    const where = at ? ` at line ${at.line}, column ${at.col}` : '';
    const reason = error.message.split(/ at line \d+, column \d+/)[0];
    throw new ConfigError(`${path}: YAML syntax error${where}: ${reason}`, { cause: error });
  }
  try {
    return document.toJS();
  } catch (error) {
    // e.g. too many aliases: the "billion laughs" guard of the yaml package.
    throw new ConfigError(`${path}: cannot be read as YAML: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** The shipped defaults, config/llama_config.yaml of the package. */
export function defaultsFilePath(): string {
  return join(packageRoot(), 'config', 'llama_config.yaml');
}

/**
 * The package's root: the first directory above this module holding a package.json, so the same
 * code works from src/config/ (tsx, vitest), from dist/config/ (compiled) and from a copy of dist/
 * inside the repository (the bench's before/after builds).
 */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) {
      throw new ConfigError(`no package.json above ${fileURLToPath(import.meta.url)}`);
    }
    dir = parent;
  }
  return dir;
}
