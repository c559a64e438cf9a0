import { describe, expect, it } from 'vitest';
import { ScimError } from '../../src/scim/errors.js';
import { parseFilter } from '../../src/scim/filter.js';

const USERS: Record<string, string> = { username: 'userName', externalid: 'externalId' };
const parse = (text: string) => parseFilter(text, (name) => USERS[name]);

function expectInvalidFilter(text: string): void {
  let caught: unknown;
  try {
    parse(text);
  } catch (error) {
    caught = error;
  }
  expect(caught, text).toBeInstanceOf(ScimError);
  expect((caught as ScimError).scimType).toBe('invalidFilter');
  expect((caught as ScimError).status).toBe(400);
}

describe('parseFilter', () => {
  it('reads the equality Okta and Entra ID send', () => {
    expect(parse('userName eq "ada@example.com"')).toEqual([{ attribute: 'userName', value: 'ada@example.com' }]);
    expect(parse('externalId eq "0a21f0f2-8d2a"')).toEqual([{ attribute: 'externalId', value: '0a21f0f2-8d2a' }]);
  });

  it('compares attribute names and the operator without case, and joins terms with and', () => {
    expect(parse('USERNAME EQ "a" And externalid eq "b"')).toEqual([
      { attribute: 'userName', value: 'a' },
      { attribute: 'externalId', value: 'b' },
    ]);
  });

  it('accepts the core schema URN before the name and JSON escapes in the value', () => {
    expect(parse('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a\\"b\\u0041"')).toEqual([
      { attribute: 'userName', value: 'a"bA' },
    ]);
  });

  it('refuses every other operator, attribute, grouping and value type', () => {
    for (const text of [
      'userName co "ada"',
      'userName sw "ada"',
      'userName pr',
      'userName eq "a" or userName eq "b"',
      '(userName eq "a")',
      'not (userName eq "a")',
      'name.givenName eq "Ada"',
      'emails[type eq "work"]',
      'active eq true',
      'userName eq ada',
      'userName eq "unterminated',
      'userName eq "a" and',
      'userName eq "a" trailing',
      'userName eq "raw\u0001control"',
      '',
    ]) {
      expectInvalidFilter(text);
    }
  });

  it('refuses a filter longer than any provider sends', () => {
    expectInvalidFilter(`userName eq "${'a'.repeat(1_000)}"`);
  });
});
