export type GroupsResult = {
  groups: string[];
  /**
   * The provider left groups out because there were too many, so `groups` may be incomplete:
   * absence from it proves nothing (Entra ID group overage, where `_claim_names` points to
   * Microsoft Graph, or `hasgroups: true` in the implicit flow).
   */
  overage: boolean;
};

/**
 * Reads groups from the ID token / userinfo claims at a dotted path; tolerant of the shapes real
 * providers send. `groups` (Okta, Auth0, Entra ID object ids), `realm_access.roles` and
 * `resource_access.<client>.roles` (Keycloak), `https://example.com/groups` (an Auth0 namespaced
 * claim, whose dots are part of its name). At each level the longest run of path segments that
 * names an own key is taken, so a whole claim name wins over its dotted reading, and a Keycloak
 * client id may contain dots. A string is one group; non-string items are ignored. Only own keys
 * are read: `constructor` or `__proto__` never reach Object.prototype.
 */
export function readGroups(claims: Record<string, unknown>, claimPath: string): GroupsResult {
  if (!isObject(claims) || typeof claimPath !== 'string' || claimPath === '') return { groups: [], overage: false };
  return { groups: toGroups(lookUp(claims, claimPath.split('.'))), overage: isOverage(claims, claimPath) };
}

/**
 * True when any of `groups` is one of `wanted`, compared exactly and case-sensitively: group
 * names are identifiers, and Entra ID sends object ids. An empty `wanted` matches nobody; "any
 * group will do" is the caller's decision to skip the check.
 */
export function isInAnyGroup(groups: readonly string[], wanted: readonly string[]): boolean {
  const have = new Set(groups);
  return wanted.some((group) => have.has(group));
}

function lookUp(node: unknown, segments: readonly string[]): unknown {
  if (segments.length === 0) return node;
  if (!isObject(node)) return undefined;
  for (let end = segments.length; end > 0; end--) {
    const key = segments.slice(0, end).join('.');
    if (Object.hasOwn(node, key)) return lookUp(node[key], segments.slice(end));
  }
  return undefined;
}

function toGroups(value: unknown): string[] {
  const items = Array.isArray(value) ? (value as unknown[]) : [value];
  const groups = items.filter((item): item is string => typeof item === 'string' && item !== '');
  return [...new Set(groups)];
}

/**
 * OpenID Connect Core §5.6.2 distributed claims: `_claim_names` names the claims that live
 * elsewhere. Entra ID uses it for `groups` when a user has more than the token can hold (200 in
 * a JWT), and in the implicit flow sends `hasgroups: true` instead.
 */
function isOverage(claims: Record<string, unknown>, claimPath: string): boolean {
  const names = Object.hasOwn(claims, '_claim_names') ? claims._claim_names : undefined;
  const topLevel = claimPath.split('.')[0] ?? claimPath;
  if (isObject(names) && (Object.hasOwn(names, claimPath) || Object.hasOwn(names, topLevel))) return true;
  return claimPath === 'groups' && Object.hasOwn(claims, 'hasgroups') && claims.hasgroups === true;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
