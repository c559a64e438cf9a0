import type { AuditLog } from '../audit/log.js';
import type { Logger } from '../log.js';
import type { Db } from '../storage/database.js';
import type { Revocations } from '../storage/revocations.js';
import { disableRefusedUser, type User } from './store.js';

/**
 * What `auth.recheck_minutes` does when the provider refuses a user's refresh: besides the session
 * (ended by the session store), their API keys must stop, or a person removed at the provider keeps
 * working keys. The user is disabled on every replica at once, as an administrator's disable is, and
 * enabled again by their next sign-in, which only the provider can let through.
 */
export function onProviderRefusal(db: Db, revocations: Revocations, audit: AuditLog, log: Logger) {
  return (user: User): void => {
    void (async () => {
      if (!(await disableRefusedUser(db, user.id))) return;
      await revocations.userDisabled(user.id);
      audit.record(undefined, {
        event: 'user_disabled',
        actor: user,
        target: user.email ?? user.subject,
        detail: { user_id: user.id, reason: 'provider_refused' },
      });
    })().catch((error: unknown) =>
      log.error({ err: error, userId: user.id }, 'could not disable a user the provider refused'),
    );
  };
}
