/**
 * Masks the password in `scheme://user:password@host` URLs. Greedy up to the last `@`, so an
 * unencoded `@` inside a password hides too much rather than too little.
 */
export function maskUrlPassword(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/?#]*:).*@/i, '$1***@');
}

/**
 * Shows a value in a message as the operator wrote it, short. A secret is shown by its type
 * alone: messages end up in logs and terminals that secrets must never reach.
 */
export function describeValue(value: unknown, secret: boolean): string {
  if (value === null || value === undefined) return 'nothing';
  if (Array.isArray(value)) return secret ? 'a list' : `a list ${clip(JSON.stringify(value))}`;
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') {
    return secret ? `a string of ${value.length} characters` : clip(JSON.stringify(maskUrlPassword(value)));
  }
  return secret ? `a ${typeof value}` : String(value);
}

const clip = (text: string) => (text.length > 80 ? `${text.slice(0, 77)}...` : text);
