import type { AuditedRequest, AuditLog } from '../audit/log.js';
import { HttpError } from '../errors.js';
import type { FailedAuthLimiter, FailureCounter } from '../identity/failure-limiter.js';
import { parseControls, type ControlCaps } from '../keys/controls.js';
import type { ApiKeyStore } from '../keys/store.js';
import type { User } from '../users/store.js';
import type { DeviceRequest, DeviceStore, PollResult, StartedDeviceRequest } from './store.js';

/** Scopes a device may ask for: the platform's. Managing keys or administering is done in a browser. */
export const DEVICE_SCOPES = ['inference', 'training', 'read', 'all'] as const;
const DEFAULT_SCOPES = ['inference'];
const CLIENT_ID = /^[A-Za-z0-9._-]{1,64}$/;
const DAY_MS = 86_400_000;

/** RFC 6749 5.2's error shape, which RFC 8628 clients parse: `error` is one of the spec's codes. */
export class DeviceFlowError extends HttpError {
  constructor(status: number, error: string, description: string, headers?: Record<string, string>) {
    super(status, error, description, { headers });
  }
}

export interface DeviceFlowSettings {
  codeSeconds: number;
  pollIntervalSeconds: number;
  keyDays: number;
  /** `auth.api_key_max_days`: the device key's lifetime is capped by it too. */
  maxKeyDays: number | undefined;
  codesPerMinute: number;
  maxKeysPerUser: number;
  caps: ControlCaps;
}

export interface DeviceFlowParts {
  store: DeviceStore;
  keys: ApiKeyStore;
  audit: AuditLog;
  /** Failed user-code lookups count here, as failed sign-ins do: the bound on guessing. */
  failedAuth: FailedAuthLimiter;
  /** Device codes asked for per address, in a one-minute window. */
  codeRequests: FailureCounter;
  settings: DeviceFlowSettings;
}

export interface CodeRequest {
  clientId: unknown;
  scope: unknown;
  deviceName: unknown;
  clientAddress: string;
}

/**
 * The device authorization grant (RFC 8628) served by the gateway itself, so it works whatever the
 * provider: a program asks for codes, a signed-in person approves on a page, and the program
 * collects a new API key of that person's. Routes adapt HTTP to these calls; nothing here decides
 * who the person is (the routes ask the one decision).
 */
export class DeviceFlow {
  constructor(private readonly parts: DeviceFlowParts) {}

  get settings(): DeviceFlowSettings {
    return this.parts.settings;
  }

  async start(request: CodeRequest, now = Date.now()): Promise<StartedDeviceRequest> {
    const { store, codeRequests, settings } = this.parts;
    const window = await codeRequests.read(request.clientAddress, now);
    if (window.failures >= settings.codesPerMinute) {
      const retryAfter = String(Math.max(1, Math.ceil(window.resetsInMs / 1000)));
      throw new DeviceFlowError(
        429,
        'slow_down',
        `Too many device codes asked for from this address; retry after ${retryAfter} seconds.`,
        { 'retry-after': retryAfter },
      );
    }
    await codeRequests.add(request.clientAddress, now);
    const clientId = request.clientId;
    if (typeof clientId !== 'string' || !CLIENT_ID.test(clientId)) {
      throw new DeviceFlowError(400, 'invalid_client', 'client_id must be 1 to 64 letters, digits, ".", "_" or "-".');
    }
    return store.start(
      {
        clientId,
        deviceName: deviceNameOf(request.deviceName),
        scopes: scopesOf(request.scope),
        clientAddress: request.clientAddress,
      },
      settings.codeSeconds * 1000,
      settings.pollIntervalSeconds,
      now,
    );
  }

  poll(deviceCode: unknown): Promise<PollResult> {
    if (typeof deviceCode !== 'string' || deviceCode.length === 0 || deviceCode.length > 100) {
      return Promise.resolve({ state: 'invalid_grant' });
    }
    return this.parts.store.poll(deviceCode);
  }

  /**
   * The request a person typed the code of. A wrong code counts as a failed attempt of their
   * address, so guessing stops at `auth.failed_auth_per_minute`.
   */
  async find(request: AuditedRequest, userCode: string): Promise<DeviceRequest | undefined> {
    const { failedAuth, store } = this.parts;
    await failedAuth.assertAllowed(request.ip);
    const found = await store.findPending(userCode);
    if (!found) await failedAuth.recordFailure(request.ip);
    return found;
  }

  /**
   * Approves for `user`: a new API key of theirs, named after the client and host, with the scopes
   * asked for and the configured lifetime. Refused when the request is no longer waiting.
   */
  async approve(request: AuditedRequest, user: User, userCode: string, now = Date.now()): Promise<{ name: string }> {
    const { store, keys, audit, settings } = this.parts;
    const pending = await this.find(request, userCode);
    if (!pending || !(await store.decide(userCode, user.id, 'approved', now))) throw notWaiting();
    const name = `${pending.clientId} on ${pending.deviceName ?? pending.clientAddress}`.slice(0, 100);
    const days = Math.min(settings.keyDays, settings.maxKeyDays ?? Infinity);
    try {
      const created = await keys.createWithin(
        settings.maxKeysPerUser,
        user,
        name,
        now + days * DAY_MS,
        now,
        parseControls({ scopes: pending.scopes }, settings.caps),
      );
      await store.attachKey(userCode, created.id, created.key);
      audit.record(request, {
        event: 'device_approved',
        actor: user,
        target: created.id,
        detail: {
          client_id: pending.clientId,
          device_name: pending.deviceName,
          device_address: pending.clientAddress,
          scopes: pending.scopes.join(' '),
        },
      });
      return { name };
    } catch (error) {
      await store.reopen(userCode);
      throw error;
    }
  }

  async deny(request: AuditedRequest, user: User, userCode: string): Promise<void> {
    const pending = await this.find(request, userCode);
    if (!pending || !(await this.parts.store.decide(userCode, user.id, 'denied'))) throw notWaiting();
    this.parts.audit.record(request, {
      event: 'device_denied',
      actor: user,
      target: pending.clientId,
      detail: { device_name: pending.deviceName, device_address: pending.clientAddress },
    });
  }
}

export const NOT_WAITING =
  'No sign-in is waiting for this code: it may be mistyped, expired, or already answered. Run the login command again for a new code.';

function notWaiting(): HttpError {
  return new HttpError(404, 'device_code_not_found', NOT_WAITING);
}

/** `scope` as RFC 6749 3.3 writes it: space-separated; only the platform's scopes. */
function scopesOf(scope: unknown): string[] {
  if (scope === undefined || scope === null || scope === '') return DEFAULT_SCOPES;
  const scopes = typeof scope === 'string' ? [...new Set(scope.split(' ').filter(Boolean))] : [];
  if (scopes.length === 0 || !scopes.every((s) => (DEVICE_SCOPES as readonly string[]).includes(s))) {
    throw new DeviceFlowError(
      400,
      'invalid_scope',
      `scope must be space-separated names from ${DEVICE_SCOPES.join(', ')}.`,
    );
  }
  return scopes;
}

/** A host name for the key's name and the approval page: printable, bounded, or none. */
function deviceNameOf(name: unknown): string | null {
  if (typeof name !== 'string') return null;
  const cleaned = name
    .replace(/[^\x20-\x7e]/g, '')
    .trim()
    .slice(0, 64);
  return cleaned || null;
}
