import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import { growingCapacity } from '../storage/capacity.js';
import type { AuditLog } from '../audit/log.js';
import { randomToken } from '../crypto/tokens.js';
import type { Revocations } from '../storage/revocations.js';
import { ForbiddenError, HttpError } from '../errors.js';
import { authenticate } from './authenticate.js';
import type { Identifier, Identity } from '../identity/identify.js';
import { renderAccountPage } from '../web/account.js';
import { sendPage } from '../web/pages.js';
import type { UsageRecorder } from '../usage/recorder.js';
import { parseControls, SCOPES, type ControlCaps } from '../keys/controls.js';
import type { ApiKeyInfo, ApiKeyStore, CreatedApiKey } from '../keys/store.js';

export const API_KEYS_PATH = '/v1/auth/api-keys';
export const ACCOUNT_PATH = '/v1/auth/account';

export interface KeyRoutesOptions {
  store: ApiKeyStore;
  audit: AuditLog;
  revocations: Revocations;
  identifier: Identifier;
  usage: UsageRecorder;
  website: string;
  maxDays?: number;
  caps: ControlCaps;
}

interface NewKeyRequest {
  name: string;
  expires_in_days?: number;
  scopes?: string[];
  models?: string[];
  requests_per_minute?: number;
  tokens_per_minute?: number;
}

/** GitHub's secret scanning partner format, or plain strings. */
type LeakReport = Array<string | { token?: unknown; type?: unknown; url?: unknown; source?: unknown }>;

const MAX_LEAK_BATCH = 1_000;
const MAX_GRACE_MINUTES = 7 * 24 * 60;

const DAY_MS = 86_400_000;

const newKeySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 100, pattern: '\\S' },
    expires_in_days: { type: 'integer', minimum: 1, maximum: 36500 },
    scopes: { type: 'array', minItems: 1, items: { type: 'string', enum: [...SCOPES] } },
    models: { type: 'array', minItems: 1, maxItems: 100, items: { type: 'string', minLength: 1, maxLength: 200 } },
    requests_per_minute: { type: 'integer', minimum: 1 },
    tokens_per_minute: { type: 'integer', minimum: 1 },
  },
} as const;

const rotateSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { grace_minutes: { type: 'integer', minimum: 0, maximum: MAX_GRACE_MINUTES } },
} as const;

/** Controls from the account page's form: checkboxes, a comma-separated model list, numbers. */
function formControls(body: Record<string, unknown> | undefined): Partial<NewKeyRequest> {
  const scopes = body?.scopes === undefined ? undefined : ([] as string[]).concat(body.scopes as string | string[]);
  const models = String(body?.models ?? '')
    .split(',')
    .map((model) => model.trim())
    .filter(Boolean);
  const number = (value: unknown) => (value === undefined || value === '' ? undefined : Number(value));
  return {
    scopes,
    models: models.length ? models : undefined,
    requests_per_minute: number(body?.requests_per_minute),
    tokens_per_minute: number(body?.tokens_per_minute),
  };
}

/** Keys are created by people who signed in, so a leaked key cannot mint more keys. */
function assertSessionCaller(identity: Identity): void {
  if (identity.method !== 'session') {
    throw new ForbiddenError(
      'session_required',
      'API keys cannot create API keys; sign in with a browser at /v1/auth/account to create one.',
    );
  }
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function describeKey(key: ApiKeyInfo) {
  return {
    id: key.id,
    name: key.name,
    stub: key.stub,
    created_at: iso(key.created_at),
    expires_at: iso(key.expires_at),
    last_used_at: iso(key.last_used_at),
    revoked_at: iso(key.revoked_at),
    scopes: key.scopes,
    models: key.models,
    requests_per_minute: key.requests_per_minute,
    tokens_per_minute: key.tokens_per_minute,
  };
}

function describeCreated(created: CreatedApiKey) {
  const { id, key, name, created_at, expires_at, scopes, models, requests_per_minute, tokens_per_minute } = created;
  return {
    id,
    key,
    name,
    created_at: iso(created_at),
    expires_at: iso(expires_at),
    scopes,
    models,
    requests_per_minute,
    tokens_per_minute,
  };
}

/** Strings from a leak report, whatever shape each entry has; anything else is ignored. */
function leakedStrings(report: unknown): string[] {
  if (!Array.isArray(report))
    throw new HttpError(400, 'invalid_report', 'Send a JSON array of {"token": "…"} entries.');
  if (report.length > MAX_LEAK_BATCH) {
    throw new HttpError(413, 'report_too_large', `A report may hold at most ${MAX_LEAK_BATCH} entries.`);
  }
  return (report as LeakReport)
    .map((entry) => (typeof entry === 'string' ? entry : entry?.token))
    .filter((token): token is string => typeof token === 'string' && token.length <= 200);
}

/** The key lifecycle for its owner: a JSON API for programs and an account page for people. */
export function registerKeyRoutes(app: FastifyInstance, options: KeyRoutesOptions): void {
  const { store, revocations, identifier, maxDays, audit, usage, caps } = options;
  const websiteOrigin = new URL(options.website).origin;

  const caller = (request: FastifyRequest, reply: FastifyReply) =>
    authenticate(identifier, websiteOrigin, request, reply);

  function expiryFor(days: number | undefined, now: number): number | null {
    if (days !== undefined && maxDays !== undefined && days > maxDays) {
      throw new HttpError(400, 'expiry_too_long', `expires_in_days may be at most ${maxDays} on this gateway.`);
    }
    const effective = days ?? maxDays;
    return effective === undefined ? null : now + effective * DAY_MS;
  }

  async function createKey(request: FastifyRequest, identity: Identity, body: NewKeyRequest): Promise<CreatedApiKey> {
    assertSessionCaller(identity);
    const now = Date.now();
    const controls = parseControls(body, caps);
    const expiresAt = expiryFor(body.expires_in_days, now);
    const created = await store.create(identity.user, body.name.trim(), expiresAt, now, controls);
    audit.record(request, {
      event: 'key_created',
      actor: identity.user,
      target: created.id,
      detail: { name: created.name },
    });
    return created;
  }

  async function revokeKey(request: FastifyRequest, identity: Identity, id: string): Promise<boolean> {
    const revoked = await store.revoke(id, identity.user.id);
    if (revoked) {
      await revocations.keysChanged();
      audit.record(request, { event: 'key_revoked', actor: identity.user, target: id });
    }
    return revoked;
  }

  app.get(API_KEYS_PATH, async (request, reply) => {
    const identity = await caller(request, reply);
    if (!identity) return reply;
    const keys = await store.listForUser(identity.user.id);
    return reply.header('cache-control', 'no-store').send({ object: 'list', data: keys.map(describeKey) });
  });

  app.post<{ Body: NewKeyRequest }>(API_KEYS_PATH, { schema: { body: newKeySchema } }, async (request, reply) => {
    const identity = await caller(request, reply);
    if (!identity) return reply;
    const created = await createKey(request, identity, request.body);
    return reply.code(201).header('cache-control', 'no-store').send(describeCreated(created));
  });

  async function rotateKey(request: FastifyRequest, identity: Identity, id: string, graceMinutes: number) {
    assertSessionCaller(identity);
    const created = await store.rotate(id, identity.user, graceMinutes * 60_000);
    if (!created) throw new HttpError(404, 'api_key_not_found', 'No active API key with this id belongs to you.');
    await revocations.keysChanged();
    audit.record(request, {
      event: 'key_created',
      actor: identity.user,
      target: created.id,
      detail: { name: created.name, rotated_from: id, grace_minutes: graceMinutes },
    });
    return created;
  }

  app.post<{ Params: { id: string }; Body: { grace_minutes?: number } | undefined }>(
    `${API_KEYS_PATH}/:id/rotate`,
    { schema: { body: rotateSchema } },
    async (request, reply) => {
      const identity = await caller(request, reply);
      if (!identity) return reply;
      const graceMinutes = request.body?.grace_minutes ?? 60;
      const created = await rotateKey(request, identity, request.params.id, graceMinutes);
      return reply
        .code(201)
        .header('cache-control', 'no-store')
        .send({ ...describeCreated(created), replaces: request.params.id, grace_minutes: graceMinutes });
    },
  );

  /**
   * Leak reports (GitHub secret scanning partner format). Anyone may send one: a real key in it is
   * revoked, which is only ever what its owner wants, and the answer is the same whatever was in
   * the report, so it cannot be used to test whether a string is a live key.
   */
  app.post<{ Body: unknown }>(`${API_KEYS_PATH}/leaked`, async (request, reply) => {
    const candidates = leakedStrings(request.body);
    const revoked = await store.revokeLeaked(candidates);
    if (revoked.length) {
      await revocations.keysChanged();
      for (const id of revoked) {
        audit.record(request, { event: 'key_revoked', target: id, detail: { by: 'leak_report' } });
      }
    }
    // The count of entries, not of strings found in them: the answer must not depend on the content.
    return reply
      .code(202)
      .header('cache-control', 'no-store')
      .send({ received: (request.body as unknown[]).length });
  });

  app.get<{ Querystring: { days?: string } }>('/v1/auth/usage', async (request, reply) => {
    const identity = await caller(request, reply);
    if (!identity) return reply;
    const days = Math.min(Math.max(Number(request.query.days ?? 30) || 30, 1), 366);
    const rows = await usage.forUser(identity.user.id, days);
    return reply.header('cache-control', 'no-store').send({ object: 'list', days, data: rows });
  });

  app.delete<{ Params: { id: string } }>(`${API_KEYS_PATH}/:id`, async (request, reply) => {
    const identity = await caller(request, reply);
    if (!identity) return reply;
    if (!(await revokeKey(request, identity, request.params.id))) {
      throw new HttpError(404, 'api_key_not_found', 'No API key with this id belongs to you.');
    }
    return reply.code(204).send();
  });

  /** Form tokens already used, so reloading the page that showed a new key does not create another. */
  const usedFormTokens = new LRUCache<string, string>({ ...growingCapacity(10_000), ttl: 3_600_000 });

  const showAccount = async (identity: Identity, reply: FastifyReply, created?: CreatedApiKey, error?: string) => {
    const [keys, usageRows] = await Promise.all([store.listForUser(identity.user.id), usage.forUser(identity.user.id)]);
    return sendPage(
      reply,
      error ? 400 : 200,
      'Your account',
      renderAccountPage({
        user: identity.user,
        keys,
        created,
        error,
        maxDays,
        usage: usageRows,
        formToken: randomToken(),
        now: Date.now(),
      }),
      { wide: true },
    );
  };

  app.get(ACCOUNT_PATH, async (request, reply) => {
    const identity = await caller(request, reply);
    return identity ? showAccount(identity, reply) : reply;
  });

  app.post<{ Body: Record<string, string | undefined> }>(`${ACCOUNT_PATH}/keys`, async (request, reply) => {
    const identity = await caller(request, reply);
    if (!identity) return reply;
    assertSessionCaller(identity);
    const formToken = String(request.body?.form_token ?? '');
    if (!formToken) return showAccount(identity, reply, undefined, 'The form has expired; please try again.');
    const earlier = usedFormTokens.get(formToken);
    if (earlier !== undefined) {
      return showAccount(
        identity,
        reply,
        undefined,
        `The key “${earlier}” was already created; its secret was shown once.`,
      );
    }
    const name = String(request.body?.name ?? '').trim();
    const daysText = String(request.body?.expires_in_days ?? '').trim();
    const days = daysText === '' ? undefined : Number(daysText);
    if (!name || name.length > 100)
      return showAccount(identity, reply, undefined, 'Give the key a name of 1 to 100 characters.');
    if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 36500)) {
      return showAccount(identity, reply, undefined, 'Expiry must be a whole number of days, 1 or more.');
    }
    try {
      const created = await createKey(request, identity, {
        name,
        expires_in_days: days,
        ...formControls(request.body),
      });
      usedFormTokens.set(formToken, created.name);
      return showAccount(identity, reply, created);
    } catch (error) {
      if (error instanceof HttpError && error.status === 400)
        return showAccount(identity, reply, undefined, error.message);
      throw error;
    }
  });

  app.post<{ Params: { id: string }; Body: Record<string, string | undefined> }>(
    `${ACCOUNT_PATH}/keys/:id/rotate`,
    async (request, reply) => {
      const identity = await caller(request, reply);
      if (!identity) return reply;
      const formToken = String(request.body?.form_token ?? '');
      if (!formToken || usedFormTokens.has(formToken)) {
        return showAccount(identity, reply, undefined, 'This rotation was already done; its secret was shown once.');
      }
      const grace = Number(request.body?.grace_minutes ?? 60);
      if (!Number.isInteger(grace) || grace < 0 || grace > MAX_GRACE_MINUTES) {
        return showAccount(identity, reply, undefined, `Grace must be 0 to ${MAX_GRACE_MINUTES} minutes.`);
      }
      const created = await rotateKey(request, identity, request.params.id, grace);
      usedFormTokens.set(formToken, created.name);
      return showAccount(identity, reply, created);
    },
  );

  app.post<{ Params: { id: string } }>(`${ACCOUNT_PATH}/keys/:id/revoke`, async (request, reply) => {
    const identity = await caller(request, reply);
    if (!identity) return reply;
    await revokeKey(request, identity, request.params.id);
    return reply.redirect(ACCOUNT_PATH, 303);
  });
}
