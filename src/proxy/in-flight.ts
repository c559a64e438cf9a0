/**
 * Forwarded requests still running, by user, so that disabling a user also cuts the streams they
 * have open now and not only their next request.
 */
export class InFlightRequests {
  private readonly byUser = new Map<string, Set<AbortController>>();

  /** Tracks a request until the returned function is called. */
  track(userId: string, aborter: AbortController): () => void {
    let set = this.byUser.get(userId);
    if (!set) this.byUser.set(userId, (set = new Set()));
    set.add(aborter);
    return () => {
      set.delete(aborter);
      if (set.size === 0 && this.byUser.get(userId) === set) this.byUser.delete(userId);
    };
  }

  abortUser(userId: string): number {
    const set = this.byUser.get(userId);
    if (!set) return 0;
    for (const aborter of set) aborter.abort();
    this.byUser.delete(userId);
    return set.size;
  }

  get size(): number {
    let total = 0;
    for (const set of this.byUser.values()) total += set.size;
    return total;
  }
}
