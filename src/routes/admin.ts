import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AUDIT_EVENTS, BUDGET_AUDIT_EVENTS, SCIM_AUDIT_EVENTS, type AuditLog } from '../audit/log.js';
import { HttpError } from '../errors.js';
import type { ApiKeyStore } from '../keys/store.js';
import type { Decide } from '../policy/decide.js';
import type { Db } from '../storage/database.js';
import type { Revocations } from '../storage/revocations.js';
import type { UsageRecorder } from '../usage/recorder.js';
import { findUser, findUsersByEmail, listUsers, setUserDisabled, type User } from '../users/store.js';
import { renderAdminPage } from '../web/admin.js';
import type { Budgets } from '../budgets/budgets.js';
import { parseKeyBudget } from '../budgets/key-budget.js';
import { spendCsv, spendReport } from '../budgets/spend.js';
import { overrideChange } from '../budgets/store.js';
import { renderSpendSection } from '../web/spend.js';
import { sendPage } from '../web/pages.js';
import { callerOf, registerGuarded } from './guard.js';
import { listAnswer, PAGE_QUERY_PROPERTIES, pageRequestOf, type PageQuery } from './paging.js';

export const ADMIN_PATH = '/v1/auth/admin';

export interface AdminRoutesOptions {
  db: Db;
  keys: ApiKeyStore;
  revocations: Revocations;
  decide: Decide;
  audit: AuditLog;
  usage: UsageRecorder;
  /** Names each user's sign-in provider on the admin page, where there are several. */
  providerOf?: (user: User) => string;
  /** Present when budgets are on: spend reports and users' budget overrides. */
  budgets?: Budgets;
}

interface AuditFilter {
  since?: string;
  event?: string;
  actor?: string;
}

/** Each filter once, as a string: a repeated parameter (an array) is a 400, never a query. */
const auditFilterSchema = {
  type: 'object',
  properties: {
    since: { type: 'string', maxLength: 40 },
    event: { type: 'string', maxLength: 64 },
    actor: { type: 'string', maxLength: 320 },
  },
} as const;

const adminPageSchema = {
  type: 'object',
  properties: {
    ...auditFilterSchema.properties,
    users_after: PAGE_QUERY_PROPERTIES.after,
    keys_after: PAGE_QUERY_PROPERTIES.after,
  },
} as const;

const pageQuerySchema = { type: 'object', properties: PAGE_QUERY_PROPERTIES } as const;

/** Rows on the admin page's audit section, and at most per export answer (page on with `since`). */
const AUDIT_PAGE_ROWS = 200;
const AUDIT_EXPORT_ROWS = 10_000;

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

/**
 * The operator's view: users, keys, the audit log; disabling users and revoking any key. Every
 * route is guarded by the one decision for the `admin` grant: an administrator's session, or their
 * key with the `admin` scope.
 */
export function registerAdminRoutes(app: FastifyInstance, options: AdminRoutesOptions): void {
  registerGuarded(app, options.decide, 'admin', (scope) => registerRoutes(scope, options));
}

function registerRoutes(app: FastifyInstance, options: AdminRoutesOptions): void {
  const { db, keys, revocations, audit } = options;

  const done = (request: FastifyRequest, reply: FastifyReply, body: Record<string, unknown>) =>
    isFormPost(request) ? reply.redirect(ADMIN_PATH, 303) : reply.send(body);

  app.get<{ Querystring: AuditFilter & { users_after?: string; keys_after?: string } }>(
    ADMIN_PATH,
    { schema: { querystring: adminPageSchema } },
    async (request, reply) => {
      const identity = callerOf(request);
      const { users_after, keys_after, ...filter } = request.query;
      const [users, somekeys, events, usageByUser] = await Promise.all([
        listUsers(db, pageRequestOf({ after: users_after })),
        keys.pageAll(pageRequestOf({ after: keys_after })),
        audit.list({
          since: parseSince(filter.since),
          event: filter.event,
          actor: filter.actor,
          limit: AUDIT_PAGE_ROWS,
        }),
        options.usage.totalsByUser(),
      ]);
      const { budgets } = options;
      const spend = budgets
        ? renderSpendSection(await spendReport(db, options.usage), budgets.settings.currency)
        : undefined;
      return sendPage(
        reply,
        200,
        'Admin',
        renderAdminPage({
          admin: identity.user,
          users: users.data,
          usage: usageByUser,
          keys: somekeys.data,
          more: {
            users: users.has_more ? users.data.at(-1)?.id : undefined,
            keys: somekeys.has_more ? somekeys.data.at(-1)?.id : undefined,
          },
          events,
          filter,
          eventNames: [...AUDIT_EVENTS, ...SCIM_AUDIT_EVENTS, ...BUDGET_AUDIT_EVENTS],
          now: Date.now(),
          ...(options.providerOf ? { providerOf: options.providerOf } : {}),
          spend,
        }),
        { wide: true },
      );
    },
  );

  app.get<{ Querystring: PageQuery }>(
    `${ADMIN_PATH}/users`,
    { schema: { querystring: pageQuerySchema } },
    async (request, reply) =>
      reply.header('cache-control', 'no-store').send(listAnswer(await listUsers(db, pageRequestOf(request.query)))),
  );

  app.get<{ Querystring: PageQuery }>(
    `${ADMIN_PATH}/keys`,
    { schema: { querystring: pageQuerySchema } },
    async (request, reply) =>
      reply.header('cache-control', 'no-store').send(listAnswer(await keys.pageAll(pageRequestOf(request.query)))),
  );

  app.post<{ Params: { id: string; action: string } }>(`${ADMIN_PATH}/users/:id/:action`, async (request, reply) => {
    const identity = callerOf(request);
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
    const identity = callerOf(request);
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

  if (options.budgets) registerBudgetRoutes(app, options, options.budgets);

  app.get<{ Querystring: AuditFilter }>(
    `${ADMIN_PATH}/audit`,
    { schema: { querystring: auditFilterSchema } },
    async (request, reply) => {
      const { since, event, actor } = request.query;
      const events = await audit.list({
        since: parseSince(since),
        event,
        actor,
        limit: AUDIT_EXPORT_ROWS,
        oldestFirst: true,
      });
      return sendDownload(
        reply,
        'audit',
        'jsonl',
        'application/x-ndjson; charset=utf-8',
        events.map((entry) => JSON.stringify(entry)).join('\n') + (events.length ? '\n' : ''),
      );
    },
  );
}

/** An export the browser saves as gatehouse-<what>-<today>.<extension> instead of showing it. */
function sendDownload(reply: FastifyReply, what: string, extension: string, type: string, body: string): FastifyReply {
  return reply
    .header('cache-control', 'no-store')
    .header(
      'content-disposition',
      `attachment; filename="gatehouse-${what}-${new Date().toISOString().slice(0, 10)}.${extension}"`,
    )
    .type(type)
    .send(body);
}

/** Spend by user and group (JSON and CSV), and setting or clearing one user's budget override. */
function registerBudgetRoutes(app: FastifyInstance, options: AdminRoutesOptions, budgets: Budgets): void {
  const { db, usage } = options;
  const { currency } = budgets.settings;

  app.get(`${ADMIN_PATH}/spend`, async (_request, reply) =>
    reply.header('cache-control', 'no-store').send({ currency, ...(await spendReport(db, usage)) }),
  );

  app.get<{ Params: { of: string } }>(`${ADMIN_PATH}/spend/:of`, async (_request, reply) => {
    const of =
      _request.params.of === 'users.csv' ? 'users' : _request.params.of === 'groups.csv' ? 'groups' : undefined;
    if (!of) throw new HttpError(404, 'not_found', 'Use /spend/users.csv or /spend/groups.csv.');
    return sendDownload(
      reply,
      `spend-${of}`,
      'csv',
      'text/csv; charset=utf-8',
      spendCsv(await spendReport(db, usage), of, currency),
    );
  });

  app.post<{ Body: Record<string, unknown> | undefined }>(`${ADMIN_PATH}/budgets`, async (request, reply) => {
    const identity = callerOf(request);
    const body = request.body ?? {};
    const who = typeof body.user === 'string' ? body.user.trim() : '';
    const target = who.includes('@') ? (await findUsersByEmail(db, who))[0] : await findUser(db, who);
    if (!target)
      throw new HttpError(404, 'user_not_found', `No user with the email or id ${JSON.stringify(who.slice(0, 320))}.`);
    // Form fields arrive as strings, and an empty one means "not set".
    const number = (value: unknown) =>
      value === undefined || value === '' ? undefined : typeof value === 'string' ? Number(value) : value;
    const limit = parseKeyBudget(
      { tokens: number(body.tokens), spend: number(body.spend), period: body.period === '' ? undefined : body.period },
      undefined,
      currency,
    );
    const previous = await budgets.store.setOverride(target.id, limit, identity.user.id);
    budgets.forget();
    options.audit.record(request, {
      event: 'budget_set',
      actor: identity.user,
      target: target.email ?? target.subject,
      detail: { user_id: target.id, ...overrideChange(previous, limit, currency) },
    });
    if (isFormPost(request)) return reply.redirect(ADMIN_PATH, 303);
    return reply.send({ user_id: target.id, budget: limit ?? null });
  });
}
