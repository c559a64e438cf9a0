import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import { growingCapacity } from '../storage/capacity.js';
import type { AuditLog } from '../audit/log.js';
import { randomToken } from '../crypto/tokens.js';
import type { Revocations } from '../storage/revocations.js';
import { ForbiddenError, HttpError } from '../errors.js';
import type { Identity } from '../identity/identify.js';
import type { Decide } from '../policy/decide.js';
import { renderAccountPage, type AccountAction, type KeyForm } from '../web/account.js';
import { sendPage } from '../web/pages.js';
import type { UsageRecorder } from '../usage/recorder.js';
import type { Budgets } from '../budgets/budgets.js';
import { KEY_BUDGET_SCHEMA, parseKeyBudget, type KeyBudgetInput } from '../budgets/key-budget.js';
import type { BudgetLimit } from '../budgets/store.js';
import {
  assertNoWiderThan,
  DEFAULT_CONTROLS,
  parseControls,
  SCOPES,
  type ControlCaps,
  type KeyControls,
} from '../keys/controls.js';
import type { ApiKeyInfo, ApiKeyStore, CreatedApiKey } from '../keys/store.js';
import { callerOf, registerGuarded } from './guard.js';
import { listAnswer, PAGE_QUERY_PROPERTIES, pageRequestOf, type PageQuery } from './paging.js';

export const API_KEYS_PATH = '/v1/auth/api-keys';
export const ACCOUNT_PATH = '/v1/auth/account';

export interface KeyRoutesOptions {
  store: ApiKeyStore;
  audit: AuditLog;
  revocations: Revocations;
  decide: Decide;
  usage: UsageRecorder;
  maxDays?: number;
  caps: ControlCaps;
  /** `auth.max_keys_per_user`: live keys (rotation graces included) one user may hold. */
  maxKeysPerUser: number;
  /** `powerml.website`: the base URL the account page's snippets show. */
  website: string;
  /** Present when budgets are on: keys may then be given budgets of their own. */
  budgets?: Budgets;
}

interface NewKeyRequest {
  name: string;
  expires_in_days?: number;
  scopes?: string[];
  models?: string[];
  requests_per_minute?: number;
  tokens_per_minute?: number;
  budget?: KeyBudgetInput;
}

/** GitHub's secret scanning partner format, or plain strings. */
type LeakReport = Array<string | { token?: unknown; type?: unknown; url?: unknown; source?: unknown }>;

const MAX_LEAK_BATCH = 1_000;
const MAX_GRACE_MINUTES = 7 * 24 * 60;

const DAY_MS = 86_400_000;
/** The schema's cap on `expires_in_days` (100 years), where the gateway sets none lower. */
const MAX_EXPIRY_DAYS = 36500;

const newKeySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 100, pattern: '\\S' },
    expires_in_days: { type: 'integer', minimum: 1, maximum: MAX_EXPIRY_DAYS },
    scopes: { type: 'array', minItems: 1, items: { type: 'string', enum: [...SCOPES] } },
    models: { type: 'array', minItems: 1, maxItems: 100, items: { type: 'string', minLength: 1, maxLength: 200 } },
    requests_per_minute: { type: 'integer', minimum: 1 },
    tokens_per_minute: { type: 'integer', minimum: 1 },
    budget: KEY_BUDGET_SCHEMA,
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
    budget: {
      tokens: number(body?.budget_tokens),
      spend: number(body?.budget_spend),
      period: body?.budget_period === '' ? undefined : body?.budget_period,
    },
  };
}

/**
 * What a caller may hand out: a session anything its owner may hold, an API key (with the `keys`
 * scope, checked by the decision) no more than it holds itself. The `admin` scope only ever goes to
 * an administrator's key.
 */
function assertMayGrant(identity: Identity, controls: KeyControls): void {
  if (controls.scopes.includes('admin') && identity.user.role !== 'admin') {
    throw new ForbiddenError(
      'admin_scope_requires_admin',
      'Only administrators may create keys with the "admin" scope.',
    );
  }
  if (identity.key) assertNoWiderThan(identity.key.controls, controls);
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

/** The create form's fields as strings (a ticked checkbox may come as one string or several), bounded. */
function typedForm(body: Record<string, unknown> | undefined): KeyForm {
  const text = (value: unknown) => (typeof value === 'string' ? value.slice(0, 200) : undefined);
  const scopes = body?.scopes === undefined ? undefined : ([] as unknown[]).concat(body.scopes);
  return {
    name: text(body?.name),
    expires_in_days: text(body?.expires_in_days),
    scopes: scopes?.filter((scope): scope is string => typeof scope === 'string').slice(0, SCOPES.length),
    models: text(body?.models),
    requests_per_minute: text(body?.requests_per_minute),
    tokens_per_minute: text(body?.tokens_per_minute),
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

/** The person's own budgets and each of their keys' budgets, for the account page. */
async function budgetsOfAccount(budgets: Budgets, identity: Identity) {
  const own = await budgets.statusOf({ user: identity.user, method: 'session' });
  const keyBudgets = await budgets.store.keyBudgetsOf(identity.user.id);
  const ofKeys = await Promise.all(
    [...keyBudgets.keys()].map(async (id) =>
      (
        await budgets.statusOf({
          user: identity.user,
          method: 'api_key',
          key: { id, controls: DEFAULT_CONTROLS, expires_at: null },
        })
      ).filter((status) => status.scope === 'key'),
    ),
  );
  return [...own, ...ofKeys.flat()];
}

const pageQuerySchema = { type: 'object', properties: PAGE_QUERY_PROPERTIES } as const;

/**
 * The key lifecycle for its owner: a JSON API for programs and an account page for people. Every
 * route but the leak report is guarded by the one decision: managing keys needs the `keys` grant
 * (a session, or a key with that scope); reading one's own usage needs only to be signed in.
 */
export function registerKeyRoutes(app: FastifyInstance, options: KeyRoutesOptions): void {
  const { store, revocations, decide, maxDays, audit, usage, caps, maxKeysPerUser, website, budgets } = options;

  /** A key's own budget, capped by its owner's; refused when budgets are off, rather than silently dropped. */
  async function keyBudgetOf(identity: Identity, input: KeyBudgetInput | undefined): Promise<BudgetLimit | undefined> {
    if (!input || (input.tokens === undefined && input.spend === undefined)) return undefined;
    if (!budgets) {
      throw new HttpError(
        400,
        'budgets_off',
        'Budgets are off on this gateway (budgets in its configuration), so a key cannot have one.',
      );
    }
    const owner = await budgets.chargeFor({ user: identity.user, method: 'session' });
    return parseKeyBudget(input, owner, budgets.settings.currency);
  }

  function expiryFor(days: number | undefined, now: number): number | null {
    if (days !== undefined && maxDays !== undefined && days > maxDays) {
      throw new HttpError(400, 'expiry_too_long', `expires_in_days may be at most ${maxDays} on this gateway.`);
    }
    const effective = days ?? maxDays;
    return effective === undefined ? null : now + effective * DAY_MS;
  }

  /** A rotation adds a key while the old one lives out its grace: it counts against the cap too. */
  async function assertRoomForKey(identity: Identity, freed: number): Promise<void> {
    const live = await store.countActive(identity.user.id);
    if (live - freed < maxKeysPerUser) return;
    throw new HttpError(
      409,
      'too_many_api_keys',
      `You have ${live} live API keys, the most this gateway allows; revoke one at /v1/auth/account first.`,
    );
  }

  async function createKey(
    request: FastifyRequest,
    identity: Identity,
    body: NewKeyRequest,
  ): Promise<CreatedApiKey & { budget?: BudgetLimit }> {
    const now = Date.now();
    const controls = parseControls(body, caps);
    assertMayGrant(identity, controls);
    const expiresAt = expiryFor(body.expires_in_days, now);
    const budget = await keyBudgetOf(identity, body.budget);
    // Keys per user are bounded, so one account cannot grow its pages and the admin lists without end.
    const created = await store.createWithin(maxKeysPerUser, identity.user, body.name.trim(), expiresAt, now, controls);
    if (budget) await budgets?.store.setKeyBudget(created.id, identity.user.id, budget);
    audit.record(request, {
      event: 'key_created',
      actor: identity.user,
      target: created.id,
      detail: { name: created.name },
    });
    return budget ? { ...created, budget } : created;
  }

  async function revokeKey(request: FastifyRequest, identity: Identity, id: string): Promise<boolean> {
    const revoked = await store.revoke(id, identity.user.id);
    if (revoked) {
      await revocations.keysChanged();
      audit.record(request, { event: 'key_revoked', actor: identity.user, target: id });
    }
    return revoked;
  }

  /** Takes a revoked or expired key off its owner's list; the audit log keeps the record. */
  async function removeKey(request: FastifyRequest, identity: Identity, id: string): Promise<void> {
    if (!(await store.removeDead(id, identity.user.id))) {
      throw new HttpError(
        409,
        'api_key_not_removable',
        'Only a revoked or expired key of yours can be removed; revoke it first.',
      );
    }
    audit.record(request, { event: 'key_removed', actor: identity.user, target: id });
  }

  async function rotateKey(request: FastifyRequest, identity: Identity, id: string, graceMinutes: number) {
    const notFound = () => new HttpError(404, 'api_key_not_found', 'No active API key with this id belongs to you.');
    const current = await store.findActive(id, identity.user.id);
    if (!current) throw notFound();
    // A rotation shows a new secret with the old key's controls: no more than the caller may grant.
    assertMayGrant(identity, current);
    await assertRoomForKey(identity, graceMinutes === 0 ? 1 : 0);
    const created = await store.rotate(id, identity.user, graceMinutes * 60_000);
    if (!created) throw notFound();
    await budgets?.store.copyKeyBudget(id, created.id);
    await revocations.keysChanged();
    audit.record(request, {
      event: 'key_created',
      actor: identity.user,
      target: created.id,
      detail: { name: created.name, rotated_from: id, grace_minutes: graceMinutes },
    });
    return created;
  }

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

  registerGuarded(app, decide, 'signed_in', (scope) => {
    scope.get<{ Querystring: { days?: string } }>('/v1/auth/usage', async (request, reply) => {
      const identity = callerOf(request);
      const days = Math.min(Math.max(Number(request.query.days ?? 30) || 30, 1), 366);
      const rows = await usage.forUser(identity.user.id, days);
      return reply.header('cache-control', 'no-store').send({ object: 'list', days, data: rows });
    });
    // The caller's budgets this period: a key sees its own and its owner's.
    scope.get('/v1/auth/budgets', async (request, reply) => {
      const data = budgets ? await budgets.statusOf(callerOf(request)) : [];
      return reply
        .header('cache-control', 'no-store')
        .send({ object: 'list', currency: budgets?.settings.currency ?? null, data });
    });
  });

  registerGuarded(app, decide, 'keys', (scope) => {
    scope.get<{ Querystring: PageQuery }>(
      API_KEYS_PATH,
      { schema: { querystring: pageQuerySchema } },
      async (request, reply) => {
        const page = await store.pageForUser(callerOf(request).user.id, pageRequestOf(request.query));
        return reply
          .header('cache-control', 'no-store')
          .send(listAnswer({ data: page.data.map(describeKey), has_more: page.has_more }));
      },
    );

    scope.post<{ Body: NewKeyRequest }>(API_KEYS_PATH, { schema: { body: newKeySchema } }, async (request, reply) => {
      const created = await createKey(request, callerOf(request), request.body);
      const budget = created.budget && {
        tokens: created.budget.tokens ?? null,
        spend: created.budget.micros === undefined ? null : created.budget.micros / 1_000_000,
        period: created.budget.period,
      };
      return reply
        .code(201)
        .header('cache-control', 'no-store')
        .send({ ...describeCreated(created), ...(budget ? { budget } : {}) });
    });

    scope.post<{ Params: { id: string }; Body: { grace_minutes?: number } | undefined }>(
      `${API_KEYS_PATH}/:id/rotate`,
      { schema: { body: rotateSchema } },
      async (request, reply) => {
        const graceMinutes = request.body?.grace_minutes ?? 60;
        const created = await rotateKey(request, callerOf(request), request.params.id, graceMinutes);
        return reply
          .code(201)
          .header('cache-control', 'no-store')
          .send({ ...describeCreated(created), replaces: request.params.id, grace_minutes: graceMinutes });
      },
    );

    scope.delete<{ Params: { id: string } }>(`${API_KEYS_PATH}/:id`, async (request, reply) => {
      if (!(await revokeKey(request, callerOf(request), request.params.id))) {
        throw new HttpError(404, 'api_key_not_found', 'No API key with this id belongs to you.');
      }
      return reply.code(204).send();
    });

    scope.post<{ Params: { id: string } }>(`${API_KEYS_PATH}/:id/remove`, async (request, reply) => {
      await removeKey(request, callerOf(request), request.params.id);
      return reply.code(204).send();
    });

    registerAccountPage(scope);
  });

  /** Form tokens already used, so reloading the page that showed a new key does not create another. */
  const usedFormTokens = new LRUCache<string, string>({ ...growingCapacity(10_000), ttl: 3_600_000 });

  /** Refusals a person can act on are shown on the page, with the form, rather than as JSON. */
  const shownOnPage = (error: unknown): error is HttpError =>
    error instanceof HttpError && [400, 403, 404, 409].includes(error.status);

  function registerAccountPage(scope: FastifyInstance): void {
    const showAccount = async (
      identity: Identity,
      reply: FastifyReply,
      options: {
        created?: CreatedApiKey;
        error?: string;
        status?: number;
        after?: string;
        done?: AccountAction;
        form?: KeyForm;
      } = {},
    ) => {
      const { created, error, status, after, done, form } = options;
      const [keys, usageRows, budgetStatuses] = await Promise.all([
        store.pageForUser(identity.user.id, pageRequestOf({ after })),
        usage.forUser(identity.user.id),
        budgets ? budgetsOfAccount(budgets, identity) : undefined,
      ]);
      return sendPage(
        reply,
        status ?? (error ? 400 : 200),
        'Your account',
        renderAccountPage({
          user: identity.user,
          keys: keys.data,
          olderKeysAfter: keys.has_more ? keys.data.at(-1)?.id : undefined,
          created,
          error,
          done,
          form,
          maxDays,
          website,
          usage: usageRows,
          formToken: randomToken(),
          now: Date.now(),
          budgets: budgets && { statuses: budgetStatuses ?? [], currency: budgets.settings.currency },
        }),
        { wide: true },
      );
    };

    scope.get<{ Querystring: { after?: string; done?: AccountAction } }>(
      ACCOUNT_PATH,
      {
        schema: {
          querystring: {
            type: 'object',
            properties: { after: PAGE_QUERY_PROPERTIES.after, done: { type: 'string', enum: ['revoked', 'removed'] } },
          },
        },
      },
      async (request, reply) =>
        showAccount(callerOf(request), reply, { after: request.query.after, done: request.query.done }),
    );

    scope.post<{ Body: Record<string, string | undefined> }>(`${ACCOUNT_PATH}/keys`, async (request, reply) => {
      const identity = callerOf(request);
      const formToken = String(request.body?.form_token ?? '');
      if (!formToken) return showAccount(identity, reply, { error: 'The form has expired; please try again.' });
      const earlier = usedFormTokens.get(formToken);
      if (earlier !== undefined) {
        return showAccount(identity, reply, {
          error: `The key “${earlier}” was already created; its secret was shown once.`,
        });
      }
      const form = typedForm(request.body);
      const name = (form.name ?? '').trim();
      const daysText = (form.expires_in_days ?? '').trim();
      const days = daysText === '' ? undefined : Number(daysText);
      const mostDays = maxDays ?? MAX_EXPIRY_DAYS;
      if (!name || name.length > 100)
        return showAccount(identity, reply, { error: 'Give the key a name of 1 to 100 characters.', form });
      if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > mostDays)) {
        return showAccount(identity, reply, {
          error: `Expiry must be a whole number of days, 1 to ${mostDays}; leave it empty for ${maxDays ? `${maxDays} days` : 'a key that does not expire'}.`,
          form,
        });
      }
      try {
        const created = await createKey(request, identity, {
          name,
          expires_in_days: days,
          ...formControls(request.body),
        });
        usedFormTokens.set(formToken, created.name);
        return showAccount(identity, reply, { created });
      } catch (error) {
        if (shownOnPage(error)) {
          return showAccount(identity, reply, { error: error.message, status: error.status, form });
        }
        throw error;
      }
    });

    scope.post<{ Params: { id: string }; Body: Record<string, string | undefined> }>(
      `${ACCOUNT_PATH}/keys/:id/rotate`,
      async (request, reply) => {
        const identity = callerOf(request);
        const formToken = String(request.body?.form_token ?? '');
        if (!formToken || usedFormTokens.has(formToken)) {
          return showAccount(identity, reply, { error: 'This rotation was already done; its secret was shown once.' });
        }
        const grace = Number(request.body?.grace_minutes ?? 60);
        if (!Number.isInteger(grace) || grace < 0 || grace > MAX_GRACE_MINUTES) {
          return showAccount(identity, reply, { error: `Grace must be 0 to ${MAX_GRACE_MINUTES} minutes.` });
        }
        try {
          const created = await rotateKey(request, identity, request.params.id, grace);
          usedFormTokens.set(formToken, created.name);
          return showAccount(identity, reply, { created });
        } catch (error) {
          if (shownOnPage(error)) return showAccount(identity, reply, { error: error.message, status: error.status });
          throw error;
        }
      },
    );

    scope.post<{ Params: { id: string } }>(`${ACCOUNT_PATH}/keys/:id/revoke`, async (request, reply) => {
      await revokeKey(request, callerOf(request), request.params.id);
      return reply.redirect(`${ACCOUNT_PATH}?done=revoked`, 303);
    });

    scope.post<{ Params: { id: string } }>(`${ACCOUNT_PATH}/keys/:id/remove`, async (request, reply) => {
      const identity = callerOf(request);
      try {
        await removeKey(request, identity, request.params.id);
      } catch (error) {
        if (shownOnPage(error)) return showAccount(identity, reply, { error: error.message, status: error.status });
        throw error;
      }
      return reply.redirect(`${ACCOUNT_PATH}?done=removed`, 303);
    });
  }
}
