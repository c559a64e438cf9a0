import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isInAnyGroup, readGroups } from '../../src/policy/groups.js';

/** ID token claims as a provider sends them, plus the provider-specific ones in `extra`. */
const idToken = (extra: Record<string, unknown>): Record<string, unknown> => ({
  iss: 'https://id.example.com/',
  sub: '00u1a2b3c4d5e6f7g8h9',
  aud: 'gatehouse',
  exp: 1_900_000_000,
  iat: 1_899_996_400,
  email: 'ada@example.com',
  email_verified: true,
  ...extra,
});

describe('readGroups from real providers', () => {
  it('reads an Okta or Auth0 groups list', () => {
    const claims = idToken({ groups: ['Everyone', 'llm-users', 'llm-admins'] });
    expect(readGroups(claims, 'groups')).toEqual({ groups: ['Everyone', 'llm-users', 'llm-admins'], overage: false });
  });

  it('reads an Auth0 namespaced claim whose name is a URL with dots', () => {
    const claims = idToken({
      'https://example.com/groups': ['engineering'],
      'https://example': { 'com/groups': ['decoy'] },
    });
    expect(readGroups(claims, 'https://example.com/groups').groups).toEqual(['engineering']);
  });

  it('prefers a top-level claim named with dots over the nested path it spells', () => {
    const claims = idToken({ 'realm_access.roles': ['flat'], realm_access: { roles: ['nested'] } });
    expect(readGroups(claims, 'realm_access.roles').groups).toEqual(['flat']);
  });

  it('reads Keycloak realm roles and client roles', () => {
    const claims = idToken({
      realm_access: { roles: ['offline_access', 'uma_authorization', 'llm-user'] },
      resource_access: {
        gatehouse: { roles: ['admin'] },
        account: { roles: ['manage-account', 'view-profile'] },
      },
    });
    expect(readGroups(claims, 'realm_access.roles').groups).toEqual([
      'offline_access',
      'uma_authorization',
      'llm-user',
    ]);
    expect(readGroups(claims, 'resource_access.gatehouse.roles').groups).toEqual(['admin']);
    expect(readGroups(claims, 'resource_access.other.roles').groups).toEqual([]);
  });

  it('reads Keycloak client roles when the client id itself has dots', () => {
    const claims = idToken({ resource_access: { 'llm.example.com': { roles: ['admin'] } } });
    expect(readGroups(claims, 'resource_access.llm.example.com.roles').groups).toEqual(['admin']);
  });

  it('reads Entra ID group object ids', () => {
    const ids = ['5f2f1b7e-93c4-4b0a-9d1e-2c6f0a8b7d31', 'a1b2c3d4-0000-4000-8000-000000000001'];
    expect(readGroups(idToken({ groups: ids, tid: 'tenant' }), 'groups')).toEqual({ groups: ids, overage: false });
  });

  it('reports Entra ID group overage, where _claim_names points to Graph instead of a groups claim', () => {
    const claims = idToken({
      _claim_names: { groups: 'src1' },
      _claim_sources: {
        src1: { endpoint: 'https://graph.windows.net/tenant/users/oid/getMemberObjects' },
      },
    });
    expect(readGroups(claims, 'groups')).toEqual({ groups: [], overage: true });
  });

  it('reports overage for Entra ID hasgroups, but only for the groups claim', () => {
    expect(readGroups(idToken({ hasgroups: true }), 'groups')).toEqual({ groups: [], overage: true });
    expect(readGroups(idToken({ hasgroups: true, roles: ['Admin'] }), 'roles')).toEqual({
      groups: ['Admin'],
      overage: false,
    });
    expect(readGroups(idToken({ hasgroups: false }), 'groups').overage).toBe(false);
  });

  it('reports overage for a nested path whose top-level claim is distributed', () => {
    const claims = idToken({ _claim_names: { realm_access: 'src1' }, _claim_sources: { src1: {} } });
    expect(readGroups(claims, 'realm_access.roles').overage).toBe(true);
  });
});

describe('readGroups with odd shapes', () => {
  it('reads a single string as one group, commas and all', () => {
    expect(readGroups({ groups: 'admins' }, 'groups').groups).toEqual(['admins']);
    expect(readGroups({ groups: 'a,b' }, 'groups').groups).toEqual(['a,b']);
  });

  it('ignores non-string and empty items, nested lists included, and repeats', () => {
    const claims = { groups: ['a', 1, null, '', ['b'], { name: 'c' }, true, 'a', 'd'] };
    expect(readGroups(claims, 'groups').groups).toEqual(['a', 'd']);
  });

  it('returns no groups when the claim is missing, null, a number, an object or a path through a list', () => {
    for (const groups of [undefined, null, 7, { admins: true }, []]) {
      expect(readGroups({ groups }, 'groups'), JSON.stringify(groups)).toEqual({ groups: [], overage: false });
    }
    expect(readGroups({ realm_access: [{ roles: ['x'] }] }, 'realm_access.roles').groups).toEqual([]);
    expect(readGroups({ realm_access: 'roles' }, 'realm_access.roles').groups).toEqual([]);
    expect(readGroups({}, 'groups').groups).toEqual([]);
  });

  it('never reads inherited properties such as constructor or __proto__', () => {
    expect(readGroups({}, 'constructor')).toEqual({ groups: [], overage: false });
    expect(readGroups({}, '__proto__')).toEqual({ groups: [], overage: false });
    expect(readGroups({}, 'toString')).toEqual({ groups: [], overage: false });
    expect(readGroups({ a: {} }, 'a.constructor.name')).toEqual({ groups: [], overage: false });
    expect(readGroups({ groups: [] }, 'groups.length')).toEqual({ groups: [], overage: false });
    expect(readGroups({}, '_claim_names.groups').groups).toEqual([]);
  });

  it('reads an own __proto__ claim as data, as JSON.parse makes one', () => {
    const claims = JSON.parse('{"__proto__": ["x"]}') as Record<string, unknown>;
    expect(readGroups(claims, '__proto__').groups).toEqual(['x']);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });

  it('tolerates inputs that break the declared types', () => {
    expect(readGroups(null as unknown as Record<string, unknown>, 'groups')).toEqual({ groups: [], overage: false });
    expect(readGroups(['groups'] as unknown as Record<string, unknown>, '0')).toEqual({ groups: [], overage: false });
    expect(readGroups({ groups: ['a'] }, '')).toEqual({ groups: [], overage: false });
    expect(readGroups({ groups: ['a'] }, undefined as unknown as string)).toEqual({ groups: [], overage: false });
    expect(() => readGroups({ '': { '': ['a'] } }, '..')).not.toThrow();
  });

  it('never throws and returns only non-empty strings, for any JSON claims and path (property)', () => {
    const path = fc.oneof(
      fc.constantFrom('groups', 'realm_access.roles', '__proto__', 'constructor', 'a.b.c', '_claim_names'),
      fc.string(),
    );
    const claims = fc.dictionary(
      fc.oneof(fc.constantFrom('groups', 'realm_access', '__proto__', '_claim_names', 'hasgroups'), fc.string()),
      fc.jsonValue(),
    );
    fc.assert(
      fc.property(claims, path, (claimSet, claimPath) => {
        const result = readGroups(claimSet, claimPath);
        expect(Array.isArray(result.groups)).toBe(true);
        for (const group of result.groups) expect(typeof group === 'string' && group !== '').toBe(true);
        expect(typeof result.overage).toBe('boolean');
      }),
    );
  });
});

describe('isInAnyGroup', () => {
  it('is true when one group is wanted', () => {
    expect(isInAnyGroup(['users', 'llm-admins'], ['llm-admins', 'root'])).toBe(true);
  });

  it('compares exactly and case-sensitively', () => {
    expect(isInAnyGroup(['LLM-Admins'], ['llm-admins'])).toBe(false);
    expect(isInAnyGroup(['llm-admins '], ['llm-admins'])).toBe(false);
    expect(isInAnyGroup(['/llm-admins'], ['llm-admins'])).toBe(false);
    expect(isInAnyGroup(['llm-admin'], ['llm-admins'])).toBe(false);
  });

  it('is false with no groups, or when no group is wanted', () => {
    expect(isInAnyGroup([], ['a'])).toBe(false);
    expect(isInAnyGroup(['a'], [])).toBe(false);
  });
});
