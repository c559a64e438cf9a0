import { closest, distance } from 'fastest-levenshtein';
import type { z } from 'zod';
import { describeValue } from './describe.js';
import { keyOf } from './interpolate.js';
import { ITEM_PROBLEM, PROVIDER_SECRET_KEYS, SECRET_KEYS, schemaAt } from './schema.js';
import { OWNED_SECTIONS, getAt, type Mapping } from './tree.js';

/**
 * Turns zod's issues into one line per key, each naming the full key path, what is wrong and
 * what is expected. zod's own messages are not used: they are written for developers, and an
 * issue for one list item is reported on its key, with the key's whole value. The exception is
 * an item checked by schema.ts's own code (a regular expression, a domain): its message is
 * Gatehouse's, and says which item and why, so each such item gets its own line.
 */
export function describeIssues(
  issues: readonly z.core.$ZodIssue[],
  tree: unknown,
  skipKeys: ReadonlySet<string>,
): string[] {
  const lines = new Map<string, string>();
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const section = issue.path.map((step) => (typeof step === 'number' ? step : String(step)));
      for (const key of issue.keys) {
        lines.set(labelOf([...section, key]), describeUnknownKey(section, key));
      }
      continue;
    }
    const at = keyOf(issue.path).map((step) => (typeof step === 'number' ? step : String(step)));
    const path = at.join('.');
    if (issue.code === 'custom' && issue.params?.[ITEM_PROBLEM] === true) {
      if (!skipKeys.has(path)) {
        const item = itemPath(issue.path, tree);
        lines.set(item, `${item} ${issue.message}`);
      }
      continue;
    }
    if (!skipKeys.has(path) && !lines.has(path)) {
      lines.set(path, describeWrongValue(at, getAt(tree, at)));
    }
  }
  return [...lines.values()];
}

/** `gateway.public_paths[1]`; just the key when the operator wrote one value rather than a list. */
/**
 * `auth.scope_paths.inference[1]`: keys joined by dots, list positions in brackets. A position is
 * left out where the file wrote one value instead of a list (google_whitelist: example.com).
 */
function itemPath(path: readonly PropertyKey[], tree: unknown): string {
  let out = '';
  for (const [i, step] of path.entries()) {
    if (typeof step === 'number') {
      if (!Array.isArray(getAt(tree, path.slice(0, i).map(String)))) break;
      out += `[${step}]`;
    } else {
      out += `${i ? '.' : ''}${String(step)}`;
    }
  }
  return out;
}

/** `gateway.port`, `auth_providers[1].client_id`: keys joined by dots, list positions in brackets. */
function labelOf(path: readonly (string | number)[]): string {
  return path.map((step, i) => (typeof step === 'number' ? `[${step}]` : `${i ? '.' : ''}${step}`)).join('');
}

function describeWrongValue(at: (string | number)[], value: unknown): string {
  const path = labelOf(at);
  const item = at[0] === 'auth_providers' && at.length === 2;
  const expected =
    at.length === 1 && at[0] !== 'auth_providers'
      ? 'a mapping of keys'
      : item
        ? 'a mapping with id, name, client_id, client_secret and server_metadata_url'
        : (schemaAt(at)?.description ?? 'a valid value');
  if (value === null || value === undefined) return `${path} is missing (expected ${expected})`;
  const secret =
    (SECRET_KEYS as readonly string[]).includes(path) ||
    (at[0] === 'auth_providers' && (PROVIDER_SECRET_KEYS as readonly unknown[]).includes(at[2]));
  return `${path} must be ${expected}, got ${describeValue(value, secret)}`;
}

/** A typo in a key would otherwise be ignored and leave its default silently in force. */
function describeUnknownKey(section: (string | number)[], key: string): string {
  const schema = schemaAt(section);
  const known = schema && 'shape' in schema ? Object.keys(schema.shape as object) : [];
  const path = labelOf([...section, key]);
  const guess = known.length > 0 ? closest(key, known) : undefined;
  if (guess !== undefined && distance(key, guess) <= Math.max(2, Math.floor(key.length / 3))) {
    return `${path} is not a known key (did you mean ${labelOf([...section, guess])}?)`;
  }
  return `${path} is not a known key (known keys in ${labelOf(section)}: ${known.join(', ')})`;
}

/**
 * Top-level sections that look like a misspelling of one of Gatehouse's (`gatway:`, `redsi:`).
 * Other sections belong to the platform and are left alone, so a typo in an owned section's name
 * would otherwise be dropped unread and leave every key of it at its default. Only near misses
 * count (see isNearMiss), case and - for _ aside: a platform's own section must never stop the gateway.
 */
export function describeMisspeltSections(edits: Mapping): string[] {
  const owned: readonly string[] = OWNED_SECTIONS;
  const problems: string[] = [];
  for (const name of Object.keys(edits)) {
    if (owned.includes(name) || name.length > 64) continue;
    const written = name.toLowerCase().replaceAll('-', '_');
    const guess = owned.find((section) => isNearMiss(written, section));
    if (guess !== undefined) {
      problems.push(
        `${name} is not a Gatehouse section (did you mean ${guess}?); its keys are ignored as the platform's, ` +
          `so rename it to ${guess}`,
      );
    }
  }
  return problems;
}

/**
 * Two edits for a long name (`gatway`, `databse`, `auth_providr`); for a short one only a swapped,
 * wrong or doubled letter of the same length (`redsi`, `auht`), since a letter more or less turns
 * `auth` into names a platform may well use (`oauth`).
 */
function isNearMiss(written: string, section: string): boolean {
  if (section.length <= 5) return written.length === section.length && editDistance(written, section) <= 1;
  return editDistance(written, section) <= 2;
}

/**
 * Levenshtein distance counting a swap of two neighbours as one edit (optimal string alignment):
 * `redsi` is one edit from `redis`, as a person sees it. Both inputs are short (at most 64).
 */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i += 1) {
    for (let j = 1; j <= b.length; j += 1) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = best;
    }
  }
  return rows[a.length]![b.length]!;
}
