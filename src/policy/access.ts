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
 * Which kind of caller a request target needs. Rules see the decoded, normalised path, and a target
 * that cannot be normalised is refused outright rather than guessed at.
 */
export function classifyTarget(target: string, rules: PathRules): PathAccess {
  // With no rules there is nothing to get around, so paths the platform may need (an encoded `/` in a
  // model id) are not refused for ambiguity.
  if (rules.public.length === 0 && rules.admin.length === 0) return 'signed_in';
  // Rules judge the resolved path, but the platform receives the path as sent and may not resolve
  // `..` itself: `/admin/../public/x` would pass as public and reach /admin. No client needs them.
  if (DOT_SEGMENT.test(target.split('?')[0] ?? '')) {
    throw new HttpError(400, 'invalid_request_path', 'The request path may not contain "." or ".." segments.');
  }
  const normalised = normalisePath(target);
  if (!normalised.ok) throw new HttpError(400, 'invalid_request_path', `${capitalise(normalised.reason)}.`);
  if (matchesAny(normalised.path, rules.admin)) return 'admin';
  if (matchesAny(normalised.path, rules.public)) return 'public';
  return 'signed_in';
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
