import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { LRUCache } from 'lru-cache';
import { growingCapacity } from '../storage/capacity.js';
import type { Logger } from '../log.js';
import type { Db } from '../storage/database.js';

export const AUDIT_EVENTS = [
  'sign_in',
  'sign_in_failed',
  'sign_out',
  'key_created',
  'key_revoked',
  'key_removed',
  'user_disabled',
  'user_enabled',
  'request_denied',
] as const;
/** Programs signing in: a JWT bearer's first use (identity/jwt-bearer.ts), device approvals (device/). */
export const MACHINE_AUDIT_EVENTS = ['machine_sign_in', 'device_approved', 'device_denied'] as const;
/** Written only where `scim.enabled` (src/routes/scim.ts): one entry per SCIM operation. */
export const SCIM_AUDIT_EVENTS = [
  'scim_user_created',
  'scim_user_changed',
  'scim_user_deleted',
  'scim_group_created',
  'scim_group_changed',
  'scim_group_deleted',
] as const;
/** Written only where budgets are on (src/routes/admin.ts): an administrator set or cleared a user's override. */
export const BUDGET_AUDIT_EVENTS = ['budget_set'] as const;
export type AuditEventName =
  | (typeof AUDIT_EVENTS)[number]
  | (typeof SCIM_AUDIT_EVENTS)[number]
  | (typeof MACHINE_AUDIT_EVENTS)[number]
  | (typeof BUDGET_AUDIT_EVENTS)[number];

export interface AuditActor {
  id?: string | null;
  email?: string | null;
}

export interface AuditEntry {
  event: AuditEventName;
  actor?: AuditActor;
  target?: string;
  /** Event specifics: a reason, a key name. Never a secret. */
  detail?: Record<string, string | number | boolean | null>;
}

/** The request an entry is about: a FastifyRequest is one, and so is a request for the platform. */
export interface AuditedRequest {
  readonly ip: string;
  readonly headers: IncomingHttpHeaders;
  /** Carries the request id; the audit log's own logger is used without one. */
  readonly log?: Pick<Logger, 'info'>;
}

export interface AuditRecord {
  id: string;
  at: string;
  event: string;
  actor_user_id: string | null;
  actor_email: string | null;
  target: string | null;
  client_address: string | null;
  user_agent: string | null;
  detail: Record<string, unknown>;
}

export interface AuditQuery {
  since?: number;
  event?: string;
  actor?: string;
  limit?: number;
  /** Export reads forward in time; the admin page shows the newest first. */
  oldestFirst?: boolean;
}

/** Denied requests can arrive by the thousand; one entry per class and address per minute tells the story. */
const DENIAL_SAMPLE_MS = 60_000;
/**
 * Failed sign-ins of nobody in particular (no actor: the provider's answer never named a person)
 * stored per client address per minute. The callback needs no credentials, so without a bound
 * one address could push every real event off the admin page; the entries left out are counted,
 * and the next one stored says how many (`suppressed`). A refusal of a named person (a domain or
 * group rule) took a real sign-in at the provider, and is always stored.
 */
export const SIGN_IN_FAILURES_PER_ADDRESS_PER_MINUTE = 10;
const SIGN_IN_FAILURE_WINDOW_MS = 60_000;

/**
 * The audit trail: each entry goes to the database (for the admin page and export) and to the
 * structured log. Writing never blocks or fails the request it describes.
 */
export class AuditLog {
  private readonly lastDenial = new LRUCache<string, number>(growingCapacity(10_000));
  private readonly signInFailures = new LRUCache<string, { windowStart: number; stored: number; suppressed: number }>(
    growingCapacity(10_000),
  );

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    /** Sees every entry, sampled or not; metrics count them. */
    private readonly onEntry: (entry: AuditEntry) => void = () => undefined,
  ) {}

  record(request: AuditedRequest | undefined, entry: AuditEntry, now = Date.now()): void {
    const clientAddress = request?.ip ?? null;
    this.onEntry(entry);
    if (entry.event === 'request_denied') {
      const sampleKey = `${entry.detail?.reason}|${clientAddress}`;
      if (now - (this.lastDenial.get(sampleKey) ?? 0) < DENIAL_SAMPLE_MS) return;
      this.lastDenial.set(sampleKey, now);
    }
    let detail = entry.detail ?? {};
    if (entry.event === 'sign_in_failed' && !entry.actor) {
      const suppressed = this.limitSignInFailures(clientAddress ?? '', now);
      if (suppressed === undefined) return;
      if (suppressed > 0) detail = { ...detail, suppressed };
    }
    const row = {
      id: randomUUID(),
      at: now,
      event: entry.event,
      actor_user_id: entry.actor?.id ?? null,
      actor_email: entry.actor?.email ?? null,
      target: entry.target ?? null,
      client_address: clientAddress,
      user_agent: request?.headers['user-agent']?.slice(0, 512) ?? null,
      detail: JSON.stringify(detail),
    };
    (request?.log ?? this.log).info({ audit: { ...row, detail } }, `audit: ${entry.event}`);
    this.db
      .insertInto('audit_events')
      .values(row)
      .execute()
      .catch((error: unknown) => this.log.error({ err: error, event: entry.event }, 'audit entry could not be stored'));
  }

  /** Undefined when this failure is not stored; else how many were left out before it. */
  private limitSignInFailures(address: string, now: number): number | undefined {
    let counts = this.signInFailures.get(address);
    if (!counts || now - counts.windowStart >= SIGN_IN_FAILURE_WINDOW_MS) {
      counts = { windowStart: now, stored: 0, suppressed: counts?.suppressed ?? 0 };
      this.signInFailures.set(address, counts);
    }
    if (counts.stored >= SIGN_IN_FAILURES_PER_ADDRESS_PER_MINUTE) {
      counts.suppressed += 1;
      return undefined;
    }
    counts.stored += 1;
    const suppressed = counts.suppressed;
    counts.suppressed = 0;
    return suppressed;
  }

  async list(query: AuditQuery = {}): Promise<AuditRecord[]> {
    let select = this.db.selectFrom('audit_events').selectAll();
    if (query.since !== undefined) select = select.where('at', '>=', query.since);
    if (query.event) select = select.where('event', '=', query.event);
    if (query.actor) select = select.where('actor_email', '=', query.actor);
    const rows = await select
      .orderBy('at', query.oldestFirst ? 'asc' : 'desc')
      .orderBy('id')
      .limit(Math.min(query.limit ?? 500, 10_000))
      .execute();
    return rows.map((row) => ({ ...row, at: new Date(Number(row.at)).toISOString(), detail: JSON.parse(row.detail) }));
  }
}
