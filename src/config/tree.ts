/** A parsed YAML mapping: string keys, values of any YAML type. */
export type Mapping = Record<string, unknown>;

/** The top-level sections Gatehouse reads; every other section belongs to the platform. */
export const OWNED_SECTIONS = [
  'auth',
  'powerml',
  'auth_provider',
  'auth_providers',
  'gateway',
  'database',
  'redis',
  'scim',
] as const;

/** True for a plain mapping (not a list, not null). */
export function isMapping(value: unknown): value is Mapping {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The value at a key path, or undefined when any step is missing or not a mapping. */
export function getAt(tree: unknown, path: readonly PropertyKey[]): unknown {
  let node = tree;
  for (const key of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = readOwn(node, key);
  }
  return node;
}

/** Reads an own key only: inherited names such as `__proto__` or `constructor` are not config. */
export function readOwn(node: object, key: PropertyKey): unknown {
  return Object.hasOwn(node, key) ? (node as Record<PropertyKey, unknown>)[key] : undefined;
}

/**
 * Keeps only what Gatehouse owns: its sections, and `website` from the `powerml` section it
 * shares with the platform. The platform's keys are dropped unread, so a platform setting can
 * never fail Gatehouse's validation.
 */
export function pickOwnedSections(edits: Mapping): Mapping {
  const owned = OWNED_SECTIONS.filter((name) => Object.hasOwn(edits, name));
  return Object.fromEntries(
    owned.map((name) => {
      const section = edits[name];
      if (name !== 'powerml' || !isMapping(section)) return [name, section];
      return [name, Object.hasOwn(section, 'website') ? { website: section.website } : {}];
    }),
  );
}

/**
 * Merges the operator's edits over the defaults. Mappings merge key by key; anything else,
 * lists included, replaces the default whole. An empty value (`key:` or `null`) keeps the
 * default, so commenting a value out and leaving the key behaves like deleting the line.
 */
export function mergeEdits(defaults: unknown, edits: unknown): unknown {
  if (edits === null || edits === undefined) return defaults;
  if (!isMapping(defaults) || !isMapping(edits)) return edits;
  const keys = new Set([...Object.keys(defaults), ...Object.keys(edits)]);
  // fromEntries defines own properties, so a `__proto__` key in YAML cannot reach a prototype.
  return Object.fromEntries([...keys].map((key) => [key, mergeEdits(readOwn(defaults, key), readOwn(edits, key))]));
}
