import { staleNamespaces, type Change, type ChangeBus } from './changes.js';
import type { SharedCache } from './shared-cache.js';

/**
 * Makes a stored change felt everywhere at once: the shared cache is invalidated first, then every
 * process is told to drop its in-memory answers, so none re-reads a stale shared entry. Neither step
 * can fail: the change is already stored and announced by the database itself (changes.ts), so the
 * caller is told it succeeded, which it did.
 */
export class Revocations {
  constructor(
    private readonly bus: ChangeBus,
    private readonly shared: SharedCache,
  ) {}

  keysChanged(): Promise<void> {
    return this.announce({ kind: 'keys_changed' });
  }

  userDisabled(userId: string): Promise<void> {
    return this.announce({ kind: 'user_disabled', userId });
  }

  sessionsEnded(): Promise<void> {
    return this.announce({ kind: 'session_ended' });
  }

  private async announce(change: Change): Promise<void> {
    await Promise.all(staleNamespaces(change).map((namespace) => this.shared.invalidate(namespace)));
    this.bus.publish(change);
  }
}
