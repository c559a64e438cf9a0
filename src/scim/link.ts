import type { AuditLog } from '../audit/log.js';
import type { Db } from '../storage/database.js';
import type { Revocations } from '../storage/revocations.js';
import { findUser, type ProviderIdentity, type User } from '../users/store.js';
import type { Effects, ScimStore } from './store.js';

/**
 * Makes what a SCIM operation did felt at once on every replica, through the same announcements
 * as an administrator's disable or a key revocation: a disabled user's sessions, keys and open
 * streams are refused within 1 s; a changed role or group reaches cached keys and sessions alike.
 */
export async function announceEffects(revocations: Revocations, effects: Effects): Promise<void> {
  for (const userId of effects.disabled) await revocations.userDisabled(userId);
  if (effects.enabled.length || effects.accessChanged.length) await revocations.keysChanged();
  if (effects.accessChanged.length || effects.excluded.length) await revocations.sessionsEnded();
}

/**
 * The sign-in hook (users/store.ts `setSignInHook`): links the person signing in to the User the
 * provider pushed before their first sign-in, and applies its `active` and groups. The only claim
 * used is `email`, and only when the provider has not marked it unverified (`email_verified` not
 * false; the rule `auth.admin_emails` follows): it must equal the pushed userName or externalId,
 * without case. Nothing else the user could choose (a name, a preferred_username) links anyone.
 */
export function linkAtSignIn(db: Db, store: ScimStore, revocations: Revocations, audit: AuditLog) {
  return async (user: User, identity: ProviderIdentity): Promise<User> => {
    const verified = identity.claims?.email_verified;
    const email = verified === false || verified === 'false' ? undefined : identity.email;
    const effects = await store.linkAtSignIn(user.id, email);
    if (!effects.disabled.length && !effects.accessChanged.length && !effects.enabled.length) return user;
    await announceEffects(revocations, effects);
    if (effects.disabled.length) {
      audit.record(undefined, {
        event: 'user_disabled',
        actor: { email: 'scim' },
        target: user.email ?? user.subject,
        detail: { user_id: user.id, reason: 'scim_inactive' },
      });
    }
    return (await findUser(db, user.id)) ?? user;
  };
}
