import { HttpError } from '../errors.js';
import { compilePathRules, matchesAny, normalisePath } from './paths.js';

/** A `.` or `..` segment, percent-encoded or not, with or without `;parameters`. */
const DOT_SEGMENT = /\/(?:\.|%2e){1,2}(?:;[^/]*)?(?=\/|$)/i;

export type PathAccess = 'public' | 'signed_in' | 'admin';

export interface PathRules {
  public: RegExp[];
  admin: RegExp[];
}

/**
 * Public paths are matched case-sensitively (allow less) and admin paths case-insensitively (deny
 * more), so a platform that ignores case cannot be reached around a rule.
 */
export function compileAccessRules(publicPaths: readonly string[], adminPaths: readonly string[]): PathRules {
  return {
    public: compilePathRules(publicPaths, { caseInsensitive: false }),
    admin: compilePathRules(adminPaths, { caseInsensitive: true }),
  };
}

/**
 * The decoded, normalised path rules judge. Rules judge the resolved path, but the platform
 * receives the path as sent and may not resolve `..` itself (`/admin/../public/x` would pass as
 * public and reach /admin), so dot segments are refused; no client needs them.
 */
export function strictPath(target: string): string {
  if (DOT_SEGMENT.test(target.split('?')[0] ?? '')) {
    throw new HttpError(400, 'invalid_request_path', 'The request path may not contain "." or ".." segments.');
  }
  const normalised = normalisePath(target);
  if (!normalised.ok) throw new HttpError(400, 'invalid_request_path', `${capitalise(normalised.reason)}.`);
  return normalised.path;
}

/**
 * Which kind of caller a request target needs, and the path that was judged: decoded and normalised.
 * A target that cannot be normalised is refused outright rather than guessed at.
 */
export function classifyTarget(target: string, rules: PathRules): { access: PathAccess; path: string } {
  // With no rules there is nothing to get around, so paths the platform may need (an encoded `/` in a
  // model id) are not refused for ambiguity: such a path is passed on as sent.
  if (rules.public.length === 0 && rules.admin.length === 0) {
    const normalised = normalisePath(target);
    return { access: 'signed_in', path: normalised.ok ? normalised.path : (target.split('?')[0] ?? '/') };
  }
  const path = strictPath(target);
  if (matchesAny(path, rules.admin)) return { access: 'admin', path };
  if (matchesAny(path, rules.public)) return { access: 'public', path };
  return { access: 'signed_in', path };
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
