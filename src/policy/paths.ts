import { ConfigError } from '../errors.js';

export type NormalisedPath = { ok: true; path: string } | { ok: false; reason: string };

/** Longer than any path the platform serves; bounds the work of the operator's regexes. The query does not count. */
export const MAX_TARGET_LENGTH = 8192;

/** Raw characters a request target may hold: printable ASCII except `\` (some servers read it as `/`) and `#`. */
const RAW_TARGET = /^[\x21\x22\x24-\x5b\x5d-\x7e]*$/;

/** Percent-escapes, checked whole: a lone `%` or `%G1` is malformed. */
const ESCAPE_OR_PERCENT = /%(?:[0-9a-fA-F]{2})?/g;

/**
 * Characters that, once decoded inside a segment, would make the path mean something else to
 * some server behind the gateway: `/` and `\` split segments, `;` starts parameters, `#` a
 * fragment, and control characters end or hide the line. Refused rather than guessed at.
 */
const AMBIGUOUS_DECODED = /[/\\;#\p{Cc}]/u;

/** A `%` still followed by two hex digits after one decoding: a server that decodes again would see another path. */
const DOUBLE_ENCODED = /%[0-9a-fA-F]{2}/;

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Decodes percent-escapes once, resolves dot segments, collapses repeated slashes, strips
 * `;params` from each segment, for matching only (the request is still forwarded verbatim).
 * `rawTarget` is the request target in origin form (RFC 9112 §3.2.1): path and optional query;
 * the query is dropped. Anything that different servers could read as different paths is refused
 * (ok: false): see RFC 3986 §5.2.4 for dot segments, and the "..;" and "%2e%2e" confusions that
 * let a path pass a gateway's rule as one path and reach the backend as another.
 */
export function normalisePath(rawTarget: string): NormalisedPath {
  if (!rawTarget.startsWith('/')) return refuse('does not start with /');
  const queryAt = rawTarget.indexOf('?');
  const rawPath = queryAt === -1 ? rawTarget : rawTarget.slice(0, queryAt);
  if (rawPath.length > MAX_TARGET_LENGTH) return refuse(`is longer than ${MAX_TARGET_LENGTH} characters`);
  if (!RAW_TARGET.test(rawPath)) return refuse('contains a space, control, non-ASCII, \\ or # character');
  const segments: string[] = [];
  // A directory stays one: /a/b/, /a/b/. and /a/b/c/.. all end in a slash (RFC 3986 §5.2.4).
  let directory = false;
  for (const rawSegment of rawPath.slice(1).split('/')) {
    const decoded = decodeSegment(rawSegment.split(';')[0] ?? '');
    if (!decoded.ok) return decoded;
    const segment = decoded.path;
    directory = segment === '' || segment === '.' || segment === '..';
    if (segment === '..' && segments.pop() === undefined) return refuse('climbs above / with ..');
    if (!directory) segments.push(segment);
  }
  const path = `/${segments.join('/')}`;
  return { ok: true, path: directory && segments.length > 0 ? `${path}/` : path };
}

/**
 * Compiles `gateway.public_paths` or `gateway.admin_paths`. Each pattern is used as written and
 * tested against the normalised path, so operators anchor it themselves (`^/health$`); an
 * unanchored `admin` matches `/v1/administrators` too. JavaScript has no inline `(?i)`: pass
 * `caseInsensitive` for rules where matching more is the safe side (admin paths: deny more),
 * and leave it off where matching less is (public paths: allow less). The `u` flag makes the
 * syntax strict and `.` match a whole character.
 */
export function compilePathRules(
  patterns: readonly string[],
  options: { caseInsensitive: boolean; key?: string },
): RegExp[] {
  const flags = options.caseInsensitive ? 'iu' : 'u';
  return patterns.map((pattern, index) => {
    try {
      return new RegExp(pattern, flags);
    } catch (error) {
      const where = `${options.key ?? 'path rule'}[${index}]`;
      throw new ConfigError(`${where} is not a valid regular expression: ${(error as Error).message}`, {
        cause: error,
      });
    }
  });
}

/**
 * True when any rule matches the path from `normalisePath`. Rules from compilePathRules carry no
 * `g` or `y` flag, so testing them leaves no `lastIndex` behind.
 */
export function matchesAny(path: string, rules: readonly RegExp[]): boolean {
  return rules.some((rule) => rule.test(path));
}

function decodeSegment(raw: string): NormalisedPath {
  // Without an escape there is nothing to decode: RAW_TARGET already refused `\`, `#` and controls.
  if (!raw.includes('%')) return { ok: true, path: raw };
  let malformed = false;
  const bytes: number[] = [];
  let rest = 0;
  for (const match of raw.matchAll(ESCAPE_OR_PERCENT)) {
    for (let i = rest; i < match.index; i++) bytes.push(raw.charCodeAt(i));
    if (match[0].length !== 3) malformed = true;
    else bytes.push(Number.parseInt(match[0].slice(1), 16));
    rest = match.index + match[0].length;
  }
  if (malformed) return refuse('contains a malformed percent-escape');
  for (let i = rest; i < raw.length; i++) bytes.push(raw.charCodeAt(i));
  let segment: string;
  try {
    segment = UTF8.decode(Uint8Array.from(bytes));
  } catch {
    return refuse('has percent-escapes that are not UTF-8');
  }
  if (AMBIGUOUS_DECODED.test(segment)) {
    return refuse('has an escape that decodes to /, \\, ;, # or a control character');
  }
  if (DOUBLE_ENCODED.test(segment)) return refuse('is percent-encoded twice');
  return { ok: true, path: segment };
}

function refuse(reason: string): NormalisedPath {
  return { ok: false, reason: `the request path ${reason}` };
}
