import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { AuditLog } from '../audit/log.js';
import { randomToken } from '../crypto/tokens.js';
import type { Revocations } from '../storage/revocations.js';
import { ForbiddenError, HttpError } from '../errors.js';
import { authenticate } from '../identity/authenticate.js';
import type { Identifier, Identity } from '../identity/identify.js';
import { renderAccountPage } from '../web/account.js';
import { sendPage } from '../web/pages.js';
import type { ApiKeyInfo, ApiKeyStore, CreatedApiKey } from './store.js';

export const API_KEYS_PATH = '/v1/auth/api-keys';
export const ACCOUNT_PATH = '/v1/auth/account';

export interface KeyRoutesOptions {
  store: ApiKeyStore;
  audit: AuditLog;
  revocations: Revocations;
  identifier: Identifier;
  website: string;
  maxDays?: number;
}

interface NewKeyRequest {
  name: string;
  expires_in_days?: number;
}

const DAY_MS = 86_400_000;

const newKeySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 100, pattern: '\\S' },
    expires_in_days: { type: 'integer', minimum: 1, maximum: 36500 },
  },
} as const;

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
  };
}

/** The key lifecycle for its owner: a JSON API for programs and an account page for people. */
export function registerKeyRoutes(app: FastifyInstance, options: KeyRoutesOptions): void {
  const { store, revocations, identifier, maxDays, audit } = options;
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
    const created = await store.create(identity.user, body.name.trim(), expiryFor(body.expires_in_days, now), now);
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
    const { id, key, name, created_at, expires_at } = created;
    return reply
      .code(201)
      .header('cache-control', 'no-store')
      .send({ id, key, name, created_at: iso(created_at), expires_at: iso(expires_at) });
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
  const usedFormTokens = new LRUCache<string, string>({ max: 10_000, ttl: 3_600_000 });

  const showAccount = async (identity: Identity, reply: FastifyReply, created?: CreatedApiKey, error?: string) => {
    const keys = await store.listForUser(identity.user.id);
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
        formToken: randomToken(),
        now: Date.now(),
      }),
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
      const created = await createKey(request, identity, { name, expires_in_days: days });
      usedFormTokens.set(formToken, created.name);
      return showAccount(identity, reply, created);
    } catch (error) {
      if (error instanceof HttpError && error.status === 400)
        return showAccount(identity, reply, undefined, error.message);
      throw error;
    }
  });

  app.post<{ Params: { id: string } }>(`${ACCOUNT_PATH}/keys/:id/revoke`, async (request, reply) => {
    const identity = await caller(request, reply);
    if (!identity) return reply;
    await revokeKey(request, identity, request.params.id);
    return reply.redirect(ACCOUNT_PATH, 303);
  });
}
