import { accountDisabled, type HttpError } from '../errors.js';

/**
 * Cancels one upstream request. undici takes as its signal anything with `aborted` and `on`/`once`
 * (an EventEmitter) and registers one listener: this holds just that list. An EventEmitter keeps a
 * dictionary-mode listener table and `once` another wrapper, an AbortController is an EventTarget;
 * either costs more, once per proxied request and for as long as a stream stays open.
 */
export class UpstreamCancel {
  aborted = false;
  /** The answer owed to a client still waiting (its account was disabled); none when the client left. */
  reason: HttpError | undefined;
  private readonly listeners: Array<() => void> = [];

  on(_event: 'abort', listener: () => void): this {
    this.listeners.push(listener);
    return this;
  }

  /** Abort happens once, so every listener is a once listener. */
  once(event: 'abort', listener: () => void): this {
    return this.on(event, listener);
  }

  removeListener(_event: 'abort', listener: () => void): this {
    const at = this.listeners.indexOf(listener);
    if (at !== -1) this.listeners.splice(at, 1);
    return this;
  }

  abort(reason?: HttpError): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    for (const listener of this.listeners.splice(0)) listener();
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
