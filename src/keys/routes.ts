import formbody from '@fastify/formbody';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ForbiddenError, HttpError } from '../errors.js';
import { sendChallenge } from '../identity/challenge.js';
import type { Identifier, Identity } from '../identity/identify.js';
import { assertSameOrigin } from '../policy/same-origin.js';
import { renderAccountPage } from '../web/account.js';
import { sendPage } from '../web/pages.js';
import type { ApiKeyInfo, ApiKeyStore, CreatedApiKey } from './store.js';
import type { ApiKeyVerifier } from './verify.js';

export const API_KEYS_PATH = '/v1/auth/api-keys';
export const ACCOUNT_PATH = '/v1/auth/account';

export interface KeyRoutesOptions {
  store: ApiKeyStore;
  verifier: ApiKeyVerifier;
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
  const { store, verifier, identifier, maxDays } = options;
  const websiteOrigin = new URL(options.website).origin;

  /** The caller, or undefined after answering with the right challenge; unsafe methods need our origin. */
  async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<Identity | undefined> {
    const identity = await identifier.identify(request);
    if (!identity) {
      sendChallenge(request, reply);
      return undefined;
    }
    if (identity.method === 'session') assertSameOrigin(request.method, request.headers, websiteOrigin);
    return identity;
  }

  function expiryFor(days: number | undefined, now: number): number | null {
    if (days !== undefined && maxDays !== undefined && days > maxDays) {
      throw new HttpError(400, 'expiry_too_long', `expires_in_days may be at most ${maxDays} on this gateway.`);
    }
    const effective = days ?? maxDays;
    return effective === undefined ? null : now + effective * DAY_MS;
  }

  async function createKey(identity: Identity, body: NewKeyRequest): Promise<CreatedApiKey> {
    if (identity.method !== 'session') {
      throw new ForbiddenError(
        'session_required',
        'API keys cannot create API keys; sign in with a browser at /v1/auth/account to create one.',
      );
    }
    const now = Date.now();
    return store.create(identity.user, body.name.trim(), expiryFor(body.expires_in_days, now), now);
  }

  async function revokeKey(identity: Identity, id: string): Promise<boolean> {
    const revoked = await store.revoke(id, identity.user.id);
    if (revoked) verifier.forgetAll();
    return revoked;
  }

  app.get(API_KEYS_PATH, async (request, reply) => {
    const identity = await authenticate(request, reply);
    if (!identity) return reply;
    const keys = await store.listForUser(identity.user.id);
    return reply.header('cache-control', 'no-store').send({ object: 'list', data: keys.map(describeKey) });
  });

  app.post<{ Body: NewKeyRequest }>(API_KEYS_PATH, { schema: { body: newKeySchema } }, async (request, reply) => {
    const identity = await authenticate(request, reply);
    if (!identity) return reply;
    const created = await createKey(identity, request.body);
    request.log.info({ keyId: created.id, userId: identity.user.id }, 'api key created');
    const { id, key, name, created_at, expires_at } = created;
    return reply
      .code(201)
      .header('cache-control', 'no-store')
      .send({ id, key, name, created_at: iso(created_at), expires_at: iso(expires_at) });
  });

  app.delete<{ Params: { id: string } }>(`${API_KEYS_PATH}/:id`, async (request, reply) => {
    const identity = await authenticate(request, reply);
    if (!identity) return reply;
    if (!(await revokeKey(identity, request.params.id))) {
      throw new HttpError(404, 'api_key_not_found', 'No API key with this id belongs to you.');
    }
    request.log.info({ keyId: request.params.id, userId: identity.user.id }, 'api key revoked');
    return reply.code(204).send();
  });

  app.register(async (forms) => {
    await forms.register(formbody);

    const showAccount = async (identity: Identity, reply: FastifyReply, created?: CreatedApiKey, error?: string) => {
      const keys = await store.listForUser(identity.user.id);
      return sendPage(
        reply,
        error ? 400 : 200,
        'Your account',
        renderAccountPage({ user: identity.user, keys, created, error, maxDays, now: Date.now() }),
      );
    };

    forms.get(ACCOUNT_PATH, async (request, reply) => {
      const identity = await authenticate(request, reply);
      return identity ? showAccount(identity, reply) : reply;
    });

    forms.post<{ Body: Record<string, string | undefined> }>(`${ACCOUNT_PATH}/keys`, async (request, reply) => {
      const identity = await authenticate(request, reply);
      if (!identity) return reply;
      const name = String(request.body?.name ?? '').trim();
      const daysText = String(request.body?.expires_in_days ?? '').trim();
      const days = daysText === '' ? undefined : Number(daysText);
      if (!name || name.length > 100) return showAccount(identity, reply, undefined, 'Give the key a name of 1 to 100 characters.');
      if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 36500)) {
        return showAccount(identity, reply, undefined, 'Expiry must be a whole number of days, 1 or more.');
      }
      try {
        const created = await createKey(identity, { name, expires_in_days: days });
        request.log.info({ keyId: created.id, userId: identity.user.id }, 'api key created');
        return showAccount(identity, reply, created);
      } catch (error) {
        if (error instanceof HttpError && error.status === 400) return showAccount(identity, reply, undefined, error.message);
        throw error;
      }
    });

    forms.post<{ Params: { id: string } }>(`${ACCOUNT_PATH}/keys/:id/revoke`, async (request, reply) => {
      const identity = await authenticate(request, reply);
      if (!identity) return reply;
      if (await revokeKey(identity, request.params.id)) {
        request.log.info({ keyId: request.params.id, userId: identity.user.id }, 'api key revoked');
      }
      return reply.redirect(ACCOUNT_PATH, 303);
    });
  });
}
