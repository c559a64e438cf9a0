import { isMapping } from './tree.js';

/** What interpolation produced, and where variables were not set. */
export interface Interpolated {
  value: unknown;
  /** `key` is the section.key holding the reference, so other complaints about it can be dropped. */
  problems: { key: string; message: string }[];
}

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * The key a value belongs to: `section.key`, or in `auth_providers` the position and the key
 * (["auth_providers", 0, "client_secret"]); deeper steps are list items or nested mappings of it.
 */
export function keyOf(path: readonly PropertyKey[]): PropertyKey[] {
  if (path[0] === 'auth_providers') return path.slice(0, typeof path[1] === 'number' ? 3 : 1);
  return path.slice(0, 2);
}

/**
 * Replaces `${NAME}` in every string with the environment variable NAME, so secrets can stay
 * out of the file. An unset variable is a problem rather than an empty string: an empty client
 * secret or API key would otherwise fail far from its cause. Messages name the variable, never
 * a value.
 */
export function interpolateEnv(tree: unknown, env: NodeJS.ProcessEnv): Interpolated {
  const problems: Interpolated['problems'] = [];
  const visit = (node: unknown, path: (string | number)[]): unknown => {
    if (typeof node === 'string') {
      return node.replace(REFERENCE, (reference: string, name: string) => {
        const value = env[name];
        if (value !== undefined) return value;
        const where = path.map((step) => (typeof step === 'number' ? `[${step}]` : `.${step}`)).join('');
        problems.push({
          key: keyOf(path).join('.'),
          message: `${where.slice(1)} uses \${${name}}, but the environment variable ${name} is not set`,
        });
        return reference;
      });
    }
    if (Array.isArray(node)) return node.map((item, index) => visit(item, [...path, index]));
    if (isMapping(node)) {
      return Object.fromEntries(Object.entries(node).map(([key, item]) => [key, visit(item, [...path, key])]));
    }
    return node;
  };
  return { value: visit(tree, []), problems };
}
