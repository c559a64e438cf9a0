import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkEmail, isAdminEmail, type EmailDecision } from '../../src/policy/email.js';

const ALLOWED: EmailDecision = { allowed: true };
const refused = (reason: Exclude<EmailDecision, { allowed: true }>['reason']): EmailDecision => ({
  allowed: false,
  reason,
});

/** Checks `email` (verified unless said otherwise) against `domains`. */
function check(
  email: unknown,
  domains: readonly string[],
  extra: { verified?: unknown; allowUnverified?: boolean } = {},
) {
  const claims = { email, ...('verified' in extra ? { email_verified: extra.verified } : { email_verified: true }) };
  return checkEmail(claims, { allowedDomains: domains, allowUnverified: extra.allowUnverified ?? false });
}

describe('checkEmail without allowed domains', () => {
  it('admits any email, or none, when the provider does not say it is unverified', () => {
    expect(check('anyone@anywhere.test', [])).toEqual(ALLOWED);
    expect(checkEmail({}, { allowedDomains: [], allowUnverified: false })).toEqual(ALLOWED);
    expect(check('not an email', [])).toEqual(ALLOWED);
  });

  it('refuses an email marked unverified, as a boolean or as the string Cognito sends', () => {
    expect(check('a@example.com', [], { verified: false })).toEqual(refused('email_unverified'));
    expect(check('a@example.com', [], { verified: 'false' })).toEqual(refused('email_unverified'));
    expect(check(undefined, [], { verified: false })).toEqual(refused('email_unverified'));
  });

  it('admits an email without email_verified, as Entra ID and Okta send verified tenant addresses', () => {
    expect(checkEmail({ email: 'a@contoso.com' }, { allowedDomains: [], allowUnverified: false })).toEqual(ALLOWED);
    expect(check('a@example.com', [], { verified: 'true' })).toEqual(ALLOWED);
  });

  it('admits an unverified email when allow_unverified_email is on', () => {
    expect(check('a@example.com', [], { verified: false, allowUnverified: true })).toEqual(ALLOWED);
  });
});

describe('checkEmail with allowed domains', () => {
  const domains = ['example.com'];

  it('admits an address at an allowed domain, whatever the case of its domain', () => {
    expect(check('ada@example.com', domains)).toEqual(ALLOWED);
    expect(check('Ada.Lovelace@EXAMPLE.Com', domains)).toEqual(ALLOWED);
    expect(check('a@other.org', ['other.org', 'example.com'])).toEqual(ALLOWED);
  });

  it('removes one trailing dot from the domain, and only one', () => {
    expect(check('a@example.com.', domains)).toEqual(ALLOWED);
    expect(check('a@example.com..', domains)).toEqual(refused('email_invalid'));
  });

  it('checks email_verified before the address', () => {
    expect(check('a@evil.test', domains, { verified: false })).toEqual(refused('email_unverified'));
    expect(check(42, domains, { verified: 'false' })).toEqual(refused('email_unverified'));
    expect(check('a@example.com', domains, { verified: false, allowUnverified: true })).toEqual(ALLOWED);
  });

  it('refuses a missing email', () => {
    expect(check(undefined, domains)).toEqual(refused('email_missing'));
    expect(check(null, domains)).toEqual(refused('email_missing'));
    expect(check('', domains)).toEqual(refused('email_missing'));
  });

  it('refuses an email that is not a string', () => {
    for (const email of [42, true, ['a@example.com'], { address: 'a@example.com' }]) {
      expect(check(email, domains), JSON.stringify(email)).toEqual(refused('email_invalid'));
    }
  });

  it('refuses an address with no @, two @, or an empty side', () => {
    for (const email of ['example.com', 'a@b@example.com', '"a@evil.com"@example.com', '@example.com', 'a@', 'a@.']) {
      expect(check(email, domains), email).toEqual(refused('email_invalid'));
    }
  });

  it('refuses an attacker-controlled domain that merely contains the allowed one', () => {
    for (const email of [
      'a@evilexample.com',
      'a@example.com.evil.com',
      'a@example.co',
      'a@xample.com',
      'a@sub.example.com',
      'a@example.com@evil.com',
    ]) {
      expect(check(email, domains).allowed, email).toBe(false);
    }
  });

  it('refuses Unicode lookalikes of the allowed domain', () => {
    // Cyrillic а (U+0430), KELVIN SIGN (U+212A, lowercased by toLowerCase to k), fullwidth period.
    expect(check('a@ex\u0430mple.com', domains)).toEqual(refused('email_domain_not_allowed'));
    expect(check('a@\u212Araken.io', ['kraken.io'])).toEqual(refused('email_domain_not_allowed'));
    expect(check('a@example\uFF0Ecom', domains)).toEqual(refused('email_domain_not_allowed'));
    expect(check('a@xn--exmple-4nf.com', domains)).toEqual(refused('email_domain_not_allowed'));
  });

  it('refuses whitespace, control and invisible characters anywhere in the address', () => {
    for (const email of [
      'a@example.com\n',
      'a@example.com\r\nX-Admin: 1',
      ' a@example.com',
      'a b@example.com',
      'a@exam ple.com',
      'a\t@example.com',
      'a@example.com\u0000',
      'a@example.com\u200B',
      'a@\u202Emoc.elpmaxe',
      'a@example.com\u00A0',
    ]) {
      expect(check(email, domains), JSON.stringify(email)).toEqual(refused('email_invalid'));
    }
  });

  it('refuses a domain with empty labels or characters no host name has', () => {
    for (const email of ['a@example..com', 'a@.example.com', 'a@[127.0.0.1]', 'a@example.com/x', 'a@exa_mple.com']) {
      expect(check(email, domains), email).toEqual(refused('email_invalid'));
    }
  });

  it('refuses an overlong address', () => {
    expect(check(`${'a'.repeat(400)}@example.com`, domains)).toEqual(refused('email_invalid'));
  });
});

describe('checkEmail with a subdomain entry', () => {
  const domains = ['.example.com'];

  it('admits any depth of subdomain', () => {
    expect(check('a@x.example.com', domains)).toEqual(ALLOWED);
    expect(check('a@a.b.example.com', domains)).toEqual(ALLOWED);
    expect(check('a@X.EXAMPLE.COM.', domains)).toEqual(ALLOWED);
  });

  it('does not admit the domain itself unless listed too', () => {
    expect(check('a@example.com', domains)).toEqual(refused('email_domain_not_allowed'));
    expect(check('a@example.com', ['.example.com', 'example.com'])).toEqual(ALLOWED);
  });

  it('never admits a look-alike suffix', () => {
    for (const email of ['a@evilexample.com', 'a@example.com.evil.com', 'a@x.example.com.evil.com', 'a@xexample.com']) {
      expect(check(email, domains), email).toEqual(refused('email_domain_not_allowed'));
    }
  });

  it('ignores entries that would match everything', () => {
    for (const entry of ['.', '', '..']) {
      expect(check('a@example.com', [entry]), JSON.stringify(entry)).toEqual(refused('email_domain_not_allowed'));
    }
  });

  it('admits only addresses whose domain is the entry or ends in "." + entry (property)', () => {
    const label = fc.stringMatching(/^[a-z0-9-]{1,10}$/);
    const domain = fc.array(label, { minLength: 1, maxLength: 4 }).map((labels) => labels.join('.'));
    fc.assert(
      fc.property(fc.string(), domain, domain, (local, emailDomain, allowed) => {
        const decision = check(`${local}@${emailDomain}`, [allowed, `.${allowed}`]);
        if (decision.allowed) {
          expect(emailDomain === allowed || emailDomain.endsWith(`.${allowed}`)).toBe(true);
        }
      }),
    );
  });

  it('never throws, and refuses whatever is not a string, for any claims (property)', () => {
    fc.assert(
      fc.property(fc.anything(), fc.anything(), (email, verified) => {
        const decision = checkEmail(
          { email, email_verified: verified },
          { allowedDomains: ['example.com'], allowUnverified: false },
        );
        if (typeof email !== 'string') expect(decision.allowed).toBe(false);
      }),
    );
  });
});

describe('isAdminEmail', () => {
  const admins = ['root@example.com', 'ops@example.com'];

  it('matches an admin email ignoring case', () => {
    expect(isAdminEmail('root@example.com', admins)).toBe(true);
    expect(isAdminEmail('ROOT@Example.COM', admins)).toBe(true);
    expect(isAdminEmail('ops@example.com', ['OPS@EXAMPLE.COM'])).toBe(true);
  });

  it('does not match another address, a missing one, or an empty list', () => {
    expect(isAdminEmail('root@example.org', admins)).toBe(false);
    expect(isAdminEmail('xroot@example.com', admins)).toBe(false);
    expect(isAdminEmail(undefined, admins)).toBe(false);
    expect(isAdminEmail('', admins)).toBe(false);
    expect(isAdminEmail('root@example.com', [])).toBe(false);
  });

  it('does not match lookalikes, padding, or a trailing dot', () => {
    expect(isAdminEmail('r\u043Eot@example.com', admins)).toBe(false);
    expect(isAdminEmail('\u212Aate@example.com', ['kate@example.com'])).toBe(false);
    expect(isAdminEmail(' root@example.com', admins)).toBe(false);
    expect(isAdminEmail('root@example.com\n', admins)).toBe(false);
    expect(isAdminEmail('root@example.com\u200B', admins)).toBe(false);
    expect(isAdminEmail('root@example.com.', admins)).toBe(false);
  });
});
