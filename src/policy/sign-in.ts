import type { Role } from '../users/store.js';
import { checkEmail, isAdminEmail } from './email.js';
import { isInAnyGroup, readGroups } from './groups.js';

export interface SignInRules {
  allowedDomains: readonly string[];
  allowUnverified: boolean;
  /** `auth.google_workspace_domain`: Google's `hd` claim must name it. */
  workspaceDomain?: string;
  allowedGroups: readonly string[];
  adminEmails: readonly string[];
  adminGroups: readonly string[];
  groupsClaim: string;
}

export type SignInDecision =
  { allowed: true; role: Role; groups: string[] } | { allowed: false; reason: string; message: string };

const MESSAGES: Record<string, string> = {
  email_missing: 'The sign-in provider did not share an email address, which this service requires.',
  email_invalid: 'The email address from the sign-in provider is not a valid address.',
  email_unverified: 'Your email address is not verified with the sign-in provider.',
  email_domain_not_allowed: 'Accounts from your email domain are not allowed to use this service.',
  workspace_domain_not_allowed:
    'Only accounts of your organisation’s Google Workspace may use this service; sign in with your work account, not a personal Google account.',
  group_not_allowed: 'Your account is not in a group allowed to use this service.',
  groups_overage:
    'The sign-in provider sent too many groups to include in the sign-in (Entra ID group overage); ask the administrator to emit only the groups assigned to this application.',
};

/**
 * Who may enter and with which role, decided from the provider's claims at each sign-in and never
 * carried over from an earlier one.
 */
export function decideSignIn(claims: Record<string, unknown>, rules: SignInRules): SignInDecision {
  const email = checkEmail(claims, {
    allowedDomains: rules.allowedDomains,
    allowUnverified: rules.allowUnverified,
    workspaceDomain: rules.workspaceDomain,
  });
  if (!email.allowed) return { allowed: false, reason: email.reason, message: MESSAGES[email.reason]! };
  const { groups, overage } = readGroups(claims, rules.groupsClaim);
  if (rules.allowedGroups.length > 0 && !isInAnyGroup(groups, rules.allowedGroups)) {
    const reason = overage ? 'groups_overage' : 'group_not_allowed';
    return { allowed: false, reason, message: MESSAGES[reason]! };
  }
  // An unverified address must never make anyone an admin, even where unverified sign-in is allowed.
  const verified = claims.email_verified !== false && claims.email_verified !== 'false';
  const emailValue = typeof claims.email === 'string' && verified ? claims.email : undefined;
  const admin = isAdminEmail(emailValue, rules.adminEmails) || isInAnyGroup(groups, rules.adminGroups);
  return { allowed: true, role: admin ? 'admin' : 'user', groups };
}
