import type { ChangeBus } from './changes.js';
import type { SharedCache } from './shared-cache.js';

/**
 * Makes a revocation felt everywhere: the shared cache is invalidated first, then every process is
 * told to drop its in-memory answers, so none re-reads a stale shared entry.
 */
export class Revocations {
  constructor(
    private readonly bus: ChangeBus,
    private readonly shared: SharedCache,
  ) {}

  async keysChanged(): Promise<void> {
    await this.shared.invalidate('key');
    this.bus.publish({ kind: 'keys_changed' });
  }

  async userDisabled(userId: string): Promise<void> {
    await Promise.all([this.shared.invalidate('key'), this.shared.invalidate('session')]);
    this.bus.publish({ kind: 'user_disabled', userId });
  }
}
