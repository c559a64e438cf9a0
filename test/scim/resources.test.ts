import { describe, expect, it } from 'vitest';
import { scimTypeOf } from '../support/scim.js';
import {
  ENTERPRISE_USER_SCHEMA,
  ENTRA_GROUP_SCHEMA,
  GROUP_SCHEMA,
  toGroupInput,
  toUserResource,
  USER_SCHEMA,
} from '../../src/scim/resources.js';

describe('toUserResource', () => {
  it('keeps what the provider sent but the password, id, meta and read-only groups', () => {
    const resource = toUserResource({
      schemas: [USER_SCHEMA],
      id: 'chosen-by-client',
      userName: 'ada@example.com',
      password: '1mz050nq',
      groups: [{ value: 'g1' }],
      meta: { resourceType: 'User' },
      locale: 'en-US',
    });
    expect(resource).toEqual({ schemas: [USER_SCHEMA], userName: 'ada@example.com', locale: 'en-US', active: true });
  });

  it('reads the enterprise extension and the boolean strings of Entra ID', () => {
    const resource = toUserResource({
      schemas: [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
      userName: 'grace@example.com',
      active: 'False',
      [ENTERPRISE_USER_SCHEMA]: { department: 'Navy' },
    });
    expect(resource.active).toBe(false);
    expect(resource[ENTERPRISE_USER_SCHEMA]).toEqual({ department: 'Navy' });
  });

  it('refuses unknown schemas, a missing core schema, and no userName', () => {
    expect(scimTypeOf(() => toUserResource({ schemas: [USER_SCHEMA, 'urn:acme:User'], userName: 'a' }))).toBe(
      'invalidSyntax',
    );
    expect(scimTypeOf(() => toUserResource({ schemas: [ENTERPRISE_USER_SCHEMA], userName: 'a' }))).toBe(
      'invalidSyntax',
    );
    expect(scimTypeOf(() => toUserResource({ userName: 'a' }))).toBe('invalidSyntax');
    expect(scimTypeOf(() => toUserResource({ schemas: [USER_SCHEMA], 'urn:acme:User': {}, userName: 'a' }))).toBe(
      'invalidSyntax',
    );
    expect(scimTypeOf(() => toUserResource({ schemas: [USER_SCHEMA], userName: ' ' }))).toBe('invalidValue');
    expect(scimTypeOf(() => toUserResource([]))).toBe('invalidSyntax');
  });
});

describe('toGroupInput', () => {
  it('accepts Entra ID’s extra group schema and reads members', () => {
    expect(
      toGroupInput({
        schemas: [GROUP_SCHEMA, ENTRA_GROUP_SCHEMA],
        displayName: 'admins',
        externalId: '8aa1a0c0',
        members: [{ value: 'u1' }, { value: 'u1' }],
      }),
    ).toEqual({ displayName: 'admins', externalId: '8aa1a0c0', members: ['u1'] });
  });

  it('refuses a group without a name', () => {
    expect(scimTypeOf(() => toGroupInput({ schemas: [GROUP_SCHEMA] }))).toBe('invalidValue');
  });
});
