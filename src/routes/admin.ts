import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AUDIT_EVENTS, type AuditLog } from '../audit/log.js';
import { ForbiddenError, HttpError } from '../errors.js';
import { authenticate } from './authenticate.js';
import type { Identifier, Identity } from '../identity/identify.js';
import type { ApiKeyStore } from '../keys/store.js';
import type { Db } from '../storage/database.js';
import type { Revocations } from '../storage/revocations.js';
import type { UsageRecorder } from '../usage/recorder.js';
import { findUser, listUsers, setUserDisabled } from '../users/store.js';
import { renderAdminPage } from '../web/admin.js';
import { sendPage } from '../web/pages.js';

export const ADMIN_PATH = '/v1/auth/admin';

export interface AdminRoutesOptions {
  db: Db;
  keys: ApiKeyStore;
  revocations: Revocations;
  identifier: Identifier;
  audit: AuditLog;
  usage: UsageRecorder;
  website: string;
}

interface AuditFilter {
  since?: string;
  event?: string;
  actor?: string;
}

function parseSince(value: string | undefined): number | undefined {
  if (!value) return undefined;
  const at = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (Number.isNaN(at)) {
    throw new HttpError(400, 'invalid_since', 'since must be an ISO 8601 date or time, or milliseconds since 1970.');
  }
  return at;
}

/** Forms post here from the admin page and expect to land back on it; programs get JSON. */
function isFormPost(request: FastifyRequest): boolean {
  return String(request.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
}

/** The operator's view: users, keys, the audit log; disabling users and revoking any key. */
export function registerAdminRoutes(app: FastifyInstance, options: AdminRoutesOptions): void {
  const { db, keys, revocations, identifier, audit } = options;
  const websiteOrigin = new URL(options.website).origin;

  async function requireAdmin(request: FastifyRequest, reply: FastifyReply): Promise<Identity | undefined> {
    const identity = await authenticate(identifier, websiteOrigin, request, reply);
    if (identity && identity.user.role !== 'admin') {
      throw new ForbiddenError('admin_required', 'Only administrators may use the admin console.');
    }
    return identity;
  }

  const done = (request: FastifyRequest, reply: FastifyReply, body: Record<string, unknown>) =>
    isFormPost(request) ? reply.redirect(ADMIN_PATH, 303) : reply.send(body);

  app.get<{ Querystring: AuditFilter }>(ADMIN_PATH, async (request, reply) => {
    const identity = await requireAdmin(request, reply);
    if (!identity) return reply;
    const filter = request.query;
    const [users, allKeys, events, usageByUser] = await Promise.all([
      listUsers(db),
      keys.listAll(),
      audit.list({ since: parseSince(filter.since), event: filter.event, actor: filter.actor, limit: 200 }),
      options.usage.totalsByUser(),
    ]);
    return sendPage(
      reply,
      200,
      'Admin',
      renderAdminPage({
        admin: identity.user,
        users,
        usage: usageByUser,
        keys: allKeys,
        events,
        filter,
        eventNames: AUDIT_EVENTS,
        now: Date.now(),
      }),
      { wide: true },
    );
  });

  app.get(`${ADMIN_PATH}/users`, async (request, reply) => {
    if (!(await requireAdmin(request, reply))) return reply;
    return reply.header('cache-control', 'no-store').send({ object: 'list', data: await listUsers(db) });
  });

  app.get(`${ADMIN_PATH}/keys`, async (request, reply) => {
    if (!(await requireAdmin(request, reply))) return reply;
    return reply.header('cache-control', 'no-store').send({ object: 'list', data: await keys.listAll() });
  });

  app.post<{ Params: { id: string; action: string } }>(`${ADMIN_PATH}/users/:id/:action`, async (request, reply) => {
    const identity = await requireAdmin(request, reply);
    if (!identity) return reply;
    const { id, action } = request.params;
    if (action !== 'disable' && action !== 'enable') {
      throw new HttpError(404, 'not_found', 'Use /disable or /enable.');
    }
    if (action === 'disable' && id === identity.user.id) {
      throw new HttpError(409, 'cannot_disable_self', 'Administrators cannot disable their own account.');
    }
    const target = await findUser(db, id);
    if (!target || !(await setUserDisabled(db, id, action === 'disable'))) {
      throw new HttpError(404, 'user_not_found', 'No user with this id.');
    }
    // Enabling must also drop cached "account disabled" answers, or the key stays refused for a second.
    if (action === 'disable') await revocations.userDisabled(id);
    else await revocations.keysChanged();
    audit.record(request, {
      event: action === 'disable' ? 'user_disabled' : 'user_enabled',
      actor: identity.user,
      target: target.email ?? target.subject,
      detail: { user_id: id },
    });
    return done(request, reply, { id, disabled: action === 'disable' });
  });

  app.post<{ Params: { id: string } }>(`${ADMIN_PATH}/keys/:id/revoke`, async (request, reply) => {
    const identity = await requireAdmin(request, reply);
    if (!identity) return reply;
    if (!(await keys.revoke(request.params.id, undefined))) {
      throw new HttpError(404, 'api_key_not_found', 'No API key with this id.');
    }
    await revocations.keysChanged();
    audit.record(request, {
      event: 'key_revoked',
      actor: identity.user,
      target: request.params.id,
      detail: { by: 'admin' },
    });
    return done(request, reply, { id: request.params.id, revoked: true });
  });

  app.get<{ Querystring: AuditFilter }>(`${ADMIN_PATH}/audit`, async (request, reply) => {
    if (!(await requireAdmin(request, reply))) return reply;
    const { since, event, actor } = request.query;
    const events = await audit.list({ since: parseSince(since), event, actor, limit: 10_000, oldestFirst: true });
    return reply
      .header('cache-control', 'no-store')
      .type('application/x-ndjson; charset=utf-8')
      .send(events.map((entry) => JSON.stringify(entry)).join('\n') + (events.length ? '\n' : ''));
  });
}
