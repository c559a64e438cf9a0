import { describe, expect, it } from 'vitest';
import { scimTypeOf } from '../support/scim.js';
import { applyGroupPatch, applyUserPatch, patchOperationsOf } from '../../src/scim/patch.js';
import { ENTERPRISE_USER_SCHEMA, PATCH_SCHEMA, toUserResource, USER_SCHEMA } from '../../src/scim/resources.js';

const patchOf = (...Operations: unknown[]) => patchOperationsOf({ schemas: [PATCH_SCHEMA], Operations });
const user = () =>
  toUserResource({
    schemas: [USER_SCHEMA],
    userName: 'ada@example.com',
    emails: [{ type: 'work', value: 'ada@example.com', primary: true }],
    name: { givenName: 'Ada', familyName: 'Lovelace' },
  });
const patched = (...operations: unknown[]) =>
  toUserResource(applyUserPatch(user() as unknown as Record<string, unknown>, patchOf(...operations)));

describe('user PATCH', () => {
  it('Okta: replace without a path, value {active: false}', () => {
    expect(patched({ op: 'replace', value: { active: false } }).active).toBe(false);
  });

  it('Entra ID: "Replace" capitalised, with the boolean strings "False" and "True"', () => {
    expect(patched({ op: 'Replace', path: 'active', value: 'False' }).active).toBe(false);
    expect(patched({ op: 'Replace', path: 'active', value: 'True' }).active).toBe(true);
  });

  it('Entra ID: a filtered path replaces the matching item’s sub-attribute', () => {
    const result = patched({ op: 'Replace', path: 'emails[type eq "work"].value', value: 'new@example.com' });
    expect(result.emails).toEqual([{ type: 'work', value: 'new@example.com', primary: true }]);
  });

  it('Entra ID: a filtered path with no matching item creates it', () => {
    const result = patched({ op: 'Add', path: 'emails[type eq "home"].value', value: 'home@example.com' });
    expect(result.emails).toContainEqual({ type: 'home', value: 'home@example.com' });
  });

  it('removes the items a filtered path names', () => {
    expect(patched({ op: 'remove', path: 'emails[type eq "work"]' }).emails).toEqual([]);
  });

  it('dotted paths and dotted keys of a value without path', () => {
    expect(patched({ op: 'replace', path: 'name.familyName', value: 'King' }).name).toEqual({
      givenName: 'Ada',
      familyName: 'King',
    });
    expect(patched({ op: 'replace', value: { 'name.givenName': 'Augusta' } }).name).toMatchObject({
      givenName: 'Augusta',
    });
  });

  it('enterprise extension attributes by their URN path, and as an object without path', () => {
    const byPath = patched({ op: 'Add', path: `${ENTERPRISE_USER_SCHEMA}:employeeNumber`, value: '1815' });
    expect(byPath[ENTERPRISE_USER_SCHEMA]).toEqual({ employeeNumber: '1815' });
    expect(byPath.schemas).toContain(ENTERPRISE_USER_SCHEMA);
    const byValue = patched({
      op: 'replace',
      value: { [ENTERPRISE_USER_SCHEMA]: { department: 'Analytical Engines' } },
    });
    expect(byValue[ENTERPRISE_USER_SCHEMA]).toEqual({ department: 'Analytical Engines' });
  });

  it('attribute names compare without case', () => {
    expect(patched({ op: 'replace', path: 'DisplayName', value: 'Ada' }).displayName).toBe('Ada');
    expect(patched({ op: 'replace', value: { ACTIVE: 'false' } }).active).toBe(false);
  });

  it('refuses what it cannot apply, by the RFC 7644 keyword', () => {
    expect(scimTypeOf(() => patched({ op: 'replace', path: 'active', value: 'nope' }))).toBe('invalidValue');
    expect(scimTypeOf(() => patched({ op: 'replace', path: 'userName', value: '' }))).toBe('invalidValue');
    expect(scimTypeOf(() => patched({ op: 'replace', path: 'urn:example:other:attr', value: 1 }))).toBe('invalidPath');
    expect(scimTypeOf(() => patched({ op: 'replace', path: 'emails[type co "w"].value', value: 'x' }))).toBe(
      'invalidFilter',
    );
    expect(scimTypeOf(() => patchOf({ op: 'move', path: 'active', value: true }))).toBe('invalidSyntax');
    expect(scimTypeOf(() => patchOf({ op: 'remove' }))).toBe('noTarget');
    expect(scimTypeOf(() => patchOperationsOf({ Operations: [{ op: 'add', value: {} }] }))).toBe('invalidSyntax');
    expect(scimTypeOf(() => patchOf())).toBe('invalidSyntax');
  });

  it('never changes the resource it was given', () => {
    const original = user();
    applyUserPatch(
      original as unknown as Record<string, unknown>,
      patchOf({ op: 'replace', value: { active: false } }),
    );
    expect(original.active).toBe(true);
  });
});

describe('group PATCH', () => {
  const group = () => ({ displayName: 'admins', externalId: null, members: new Set(['u1', 'u2']) });

  it('Okta: add members with a list, remove one by a members[value eq] path', () => {
    const added = applyGroupPatch(
      group(),
      patchOf({ op: 'add', path: 'members', value: [{ value: 'u3', display: 'c' }] }),
    );
    expect([...added.members]).toEqual(['u1', 'u2', 'u3']);
    const removed = applyGroupPatch(added, patchOf({ op: 'remove', path: 'members[value eq "u1"]' }));
    expect([...removed.members]).toEqual(['u2', 'u3']);
  });

  it('Okta: a replace without path renames, ignoring the id it repeats', () => {
    const renamed = applyGroupPatch(group(), patchOf({ op: 'replace', value: { id: 'g1', displayName: 'staff' } }));
    expect(renamed.displayName).toBe('staff');
    expect(renamed.members.size).toBe(2);
  });

  it('Entra ID: "Remove" on members with a list of values; without a value, every member', () => {
    const removed = applyGroupPatch(
      group(),
      patchOf({ op: 'Remove', path: 'members', value: [{ $ref: null, value: 'u2' }] }),
    );
    expect([...removed.members]).toEqual(['u1']);
    expect(applyGroupPatch(group(), patchOf({ op: 'remove', path: 'members' })).members.size).toBe(0);
  });

  it('replace on members sets them', () => {
    expect([
      ...applyGroupPatch(group(), patchOf({ op: 'replace', path: 'members', value: [{ value: 'u9' }] })).members,
    ]).toEqual(['u9']);
  });

  it('refuses members without a value and attributes groups do not keep', () => {
    expect(
      scimTypeOf(() => applyGroupPatch(group(), patchOf({ op: 'add', path: 'members', value: [{ display: 'x' }] }))),
    ).toBe('invalidValue');
    expect(scimTypeOf(() => applyGroupPatch(group(), patchOf({ op: 'add', path: 'owner', value: 'x' })))).toBe(
      'invalidPath',
    );
  });
});
