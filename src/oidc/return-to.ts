const PLACEHOLDER_ORIGIN = 'http://gatehouse.invalid';

/**
 * Where a browser may be sent after sign-in: only a path on this origin. Anything a browser could
 * read as another origin (`//host`, `/\host`, a scheme, whitespace or control characters it would
 * strip, or percent-encoded forms of these) falls back to `/`, closing the open redirect
 * (RFC 9700 4.11.2).
 */
export function safeReturnTo(candidate: unknown): string {
  if (typeof candidate !== 'string' || candidate.length > 2048 || !isSafePath(candidate)) return '/';
  const resolved = new URL(candidate, PLACEHOLDER_ORIGIN);
  if (resolved.origin !== PLACEHOLDER_ORIGIN) return '/';
  const path = resolved.pathname + resolved.search + resolved.hash;
  // Resolving dot segments can turn `/.//evil.com` into `//evil.com`, and `/../%2f` into `/%2f`
  // (RFC 3986 5.2.4), so the result is judged as the candidate was.
  return isSafePath(path) ? path : '/';
}

function isSafePath(path: string): boolean {
  // Browsers drop tabs and newlines anywhere in a URL and read `\` as `/`, so any of them is refused.
  if (/[\s\\]/.test(path)) return false;
  const decoded = decodeOnce(path);
  return decoded !== undefined && isLocalPath(path) && isLocalPath(decoded);
}

// Control characters are exactly what is being refused here.
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

function isLocalPath(path: string): boolean {
  return path.startsWith('/') && !path.startsWith('//') && !path.startsWith('/\\') && !CONTROL_CHARACTER.test(path);
}

function decodeOnce(value: string): string | undefined {
  try {
    return decodeURIComponent(value);
  } catch {
    return undefined;
  }
}
