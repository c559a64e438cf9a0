import { EventEmitter } from 'node:events';
import { accountDisabled, type HttpError } from '../errors.js';

/**
 * Cancels one upstream request. undici takes an EventEmitter with `aborted` as its signal; it costs
 * a fraction of an AbortController (an EventTarget), which matters once per proxied request.
 */
export class UpstreamCancel extends EventEmitter {
  aborted = false;
  /** The answer owed to a client still waiting (its account was disabled); none when the client left. */
  reason: HttpError | undefined;

  abort(reason?: HttpError): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.emit('abort');
  }
}

/**
 * Forwarded requests still running, by user, so that disabling a user also cuts the streams they
 * have open now and not only their next request.
 */
export class InFlightRequests {
  private readonly byUser = new Map<string, Set<UpstreamCancel>>();

  /** Tracks a request until the returned function is called. */
  track(userId: string, cancel: UpstreamCancel): () => void {
    let set = this.byUser.get(userId);
    if (!set) this.byUser.set(userId, (set = new Set()));
    set.add(cancel);
    return () => {
      set.delete(cancel);
      if (set.size === 0 && this.byUser.get(userId) === set) this.byUser.delete(userId);
    };
  }

  abortUser(userId: string): number {
    const set = this.byUser.get(userId);
    if (!set) return 0;
    for (const cancel of set) cancel.abort(accountDisabled());
    this.byUser.delete(userId);
    return set.size;
  }

  get size(): number {
    let total = 0;
    for (const set of this.byUser.values()) total += set.size;
    return total;
  }
}
