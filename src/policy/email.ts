export type EmailDecision =
  | { allowed: true }
  | {
      allowed: false;
      reason:
        | 'email_missing'
        | 'email_invalid'
        | 'email_unverified'
        | 'email_domain_not_allowed'
        | 'workspace_domain_not_allowed';
    };

export interface EmailRules {
  /** Lowercase domains; `.example.com` admits the subdomains of example.com but not example.com itself. Empty = any. */
  allowedDomains: readonly string[];
  /** Admit an email the provider marks `email_verified: false`. */
  allowUnverified: boolean;
  /** Google Workspace domain whose accounts alone may sign in, read from Google's `hd` claim. */
  workspaceDomain?: string;
}

/** RFC 5321 §4.5.3.1: 64 octets of local part, 255 of domain, and the @. */
const MAX_EMAIL_LENGTH = 320;

/** Whitespace, control and format characters (bidi overrides, zero-width spaces) hide what an address says. */
const HIDDEN_CHARACTERS = /[\s\p{Cc}\p{Cf}]/u;

/** Letters, digits and hyphens, or any non-ASCII character, which then simply matches no configured domain. */
const DOMAIN_LABEL = /^(?:[a-z0-9-]|\P{ASCII})+$/u;

/**
 * Decides whether the email in the provider's claims may sign in (OpenID Connect Core §5.1,
 * `email` and `email_verified`). Exact domain match on the part after the single @, after
 * lowercasing A-Z only and removing one trailing dot: no Unicode normalisation, so a lookalike
 * (Cyrillic а, KELVIN SIGN) never equals an ASCII domain. An absent `email_verified` is accepted:
 * Entra ID and Okta omit it for the verified addresses of their own tenants.
 */
export function checkEmail(
  claims: { email?: unknown; email_verified?: unknown; hd?: unknown },
  rules: EmailRules,
): EmailDecision {
  if (!rules.allowUnverified && isMarkedUnverified(claims.email_verified)) return refuse('email_unverified');
  // Google sends `hd` only for Workspace accounts: a personal account (gmail.com, or a consumer
  // account under a company address) has none, and the email alone cannot tell them apart.
  if (rules.workspaceDomain !== undefined) {
    const hd = typeof claims.hd === 'string' ? asciiLowercase(claims.hd) : undefined;
    if (hd !== asciiLowercase(rules.workspaceDomain)) return refuse('workspace_domain_not_allowed');
  }
  if (rules.allowedDomains.length === 0) return { allowed: true };
  const { email } = claims;
  if (email === undefined || email === null || email === '') return refuse('email_missing');
  const domain = typeof email === 'string' ? domainOf(email) : undefined;
  if (domain === undefined) return refuse('email_invalid');
  return rules.allowedDomains.some((allowed) => domainMatches(domain, allowed))
    ? { allowed: true }
    : refuse('email_domain_not_allowed');
}

/**
 * True when `email` is one of `adminEmails`, ignoring the case of A-Z. The caller passes only an
 * address that checkEmail admitted and the provider did not mark unverified: anyone may type an
 * unverified address, the administrator's included.
 */
export function isAdminEmail(email: string | undefined, adminEmails: readonly string[]): boolean {
  if (email === undefined || email === '' || HIDDEN_CHARACTERS.test(email)) return false;
  const wanted = asciiLowercase(email);
  return adminEmails.some((admin) => asciiLowercase(admin) === wanted);
}

/** `email_verified` is a JSON boolean, but some providers (Amazon Cognito) send the string. */
function isMarkedUnverified(value: unknown): boolean {
  return value === false || value === 'false';
}

/** The lowercased domain of a well-formed address, or undefined. */
function domainOf(email: string): string | undefined {
  if (email.length > MAX_EMAIL_LENGTH || HIDDEN_CHARACTERS.test(email)) return undefined;
  // Exactly one @: `"a@evil.com"@example.com` is valid RFC 5322, but parsers disagree on which
  // domain it names, so it is refused rather than interpreted.
  const parts = email.split('@');
  if (parts.length !== 2) return undefined;
  const [local = '', rawDomain = ''] = parts;
  const domain = asciiLowercase(rawDomain.endsWith('.') ? rawDomain.slice(0, -1) : rawDomain);
  if (local === '' || domain === '') return undefined;
  return domain.split('.').every((label) => DOMAIN_LABEL.test(label)) ? domain : undefined;
}

function domainMatches(domain: string, allowed: string): boolean {
  const rule = asciiLowercase(allowed.endsWith('.') ? allowed.slice(0, -1) : allowed);
  if (rule.startsWith('.')) {
    // The suffix keeps its leading dot, so neither evilexample.com nor the bare example.com ends
    // with .example.com; domainOf has refused empty labels, so something precedes the dot.
    return rule.length > 1 && domain.endsWith(rule);
  }
  return rule !== '' && domain === rule;
}

/** Only A-Z: `toLowerCase` maps U+212A KELVIN SIGN to k and U+0130 to i + a combining dot. */
function asciiLowercase(value: string): string {
  return value.replace(/[A-Z]/g, (letter) => letter.toLowerCase());
}

function refuse(reason: Exclude<EmailDecision, { allowed: true }>['reason']): EmailDecision {
  return { allowed: false, reason };
}
