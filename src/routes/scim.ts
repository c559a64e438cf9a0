import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditActor, AuditEventName, AuditLog } from '../audit/log.js';
import { sha256 } from '../crypto/tokens.js';
import type { HttpError } from '../errors.js';
import { readBody } from '../http/body.js';
import { JsonScanner } from '../http/json-scan.js';
import type { Decide } from '../policy/decide.js';
import type { Revocations } from '../storage/revocations.js';
import { invalid, scimErrorBody, ScimError } from '../scim/errors.js';
import { parseFilter, type Equality } from '../scim/filter.js';
import { announceEffects } from '../scim/link.js';
import { patchOperationsOf } from '../scim/patch.js';
import {
  LIST_SCHEMA,
  MAX_LIST_COUNT,
  metaOf,
  resourceTypes,
  schemas,
  SCIM_BODY_LIMIT_BYTES,
  serviceProviderConfig,
  toGroupInput,
  toUserResource,
} from '../scim/resources.js';
import type { Effects, ScimGroup, ScimStore, ScimUser } from '../scim/store.js';

export const SCIM_PREFIX = '/scim/v2';

export interface ScimRoutesOptions {
  store: ScimStore;
  decide: Decide;
  revocations: Revocations;
  audit: AuditLog;
  /** `scim.token`; undefined when only API keys with the `scim` scope are accepted. */
  token: string | undefined;
  website: string;
  answerFailure: (error: unknown, request: FastifyRequest) => HttpError;
}

const BEARER = /^Bearer +(\S+) *$/i;
const NO_MEMBERS = new Set<string>();
const SCIM_JSON = 'application/scim+json; charset=utf-8';

const USER_FILTERS: Record<string, string> = { username: 'userName', externalid: 'externalId', id: 'id' };
const GROUP_FILTERS: Record<string, string> = { displayname: 'displayName', externalid: 'externalId', id: 'id' };

interface Change<T> {
  result: T;
  effects: Effects;
}

interface ListQuery {
  filter?: string;
  startIndex?: string;
  count?: string;
  excludedAttributes?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who a SCIM request is from, for the audit log: the configured token, or a key's owner. */
    scimActor?: AuditActor;
  }
}

/**
 * RFC 7644 at /scim/v2: Users, Groups and the discovery resources. Every request is let in by
 * `scim.token` (compared in constant time) or, through the one decision, by an administrator's
 * API key with the `scim` scope; everything else is answered in the SCIM error shape.
 */
export function registerScimRoutes(app: FastifyInstance, options: ScimRoutesOptions): void {
  void app.register(
    (scope, _opts, done) => {
      registerRoutes(scope, options);
      done();
    },
    { prefix: SCIM_PREFIX },
  );
}

function registerRoutes(app: FastifyInstance, options: ScimRoutesOptions): void {
  const { store, decide, revocations, audit } = options;
  const base = `${options.website}${SCIM_PREFIX}`;
  const tokenDigest = options.token === undefined ? undefined : Buffer.from(sha256(options.token));

  app.removeAllContentTypeParsers();
  app.addContentTypeParser(['application/scim+json', 'application/json'], (request, payload, done) => {
    // One scanner per body: nesting is counted across chunks, and refused while the body arrives.
    const scanner = new JsonScanner(NO_MEMBERS);
    readBody(payload, { bytes: SCIM_BODY_LIMIT_BYTES }, (chunk) => scanner.write(chunk)).then(
      (body) => {
        try {
          done(null, JSON.parse(body.toString('utf8')));
        } catch {
          done(invalid('invalidSyntax', 'The body is not valid JSON.'), undefined);
        }
      },
      (error: Error) => done(error, undefined),
    );
  });

  app.setErrorHandler((error, request, reply) => {
    if (error instanceof ScimError)
      return send(reply, error.status, scimErrorBody(error.status, error.message, error.scimType), error.headers);
    const answer = options.answerFailure(error, request);
    // Fastify's own refusals (a body it cannot read) are the client's syntax.
    const scimType = answer.status === 400 ? 'invalidSyntax' : undefined;
    return send(reply, answer.status, scimErrorBody(answer.status, answer.message, scimType), answer.headers);
  });
  app.setNotFoundHandler((request, reply) =>
    send(
      reply,
      404,
      scimErrorBody(
        404,
        `Gatehouse's SCIM service has no ${request.method} ${request.url.split('?')[0]?.slice(0, 200)}.`,
      ),
    ),
  );

  app.addHook('onRequest', async (request) => {
    const presented = BEARER.exec(request.headers.authorization ?? '')?.[1];
    if (tokenDigest && presented !== undefined) {
      const digest = Buffer.from(sha256(presented));
      if (timingSafeEqual(digest, tokenDigest)) {
        request.scimActor = { email: 'scim.token' };
        return;
      }
    }
    const decision = await decide({ credentials: request, method: request.method, target: request.url, need: 'scim' });
    if (decision.outcome === 'challenge') {
      throw new ScimError(
        401,
        undefined,
        'Send scim.token, or an administrator’s API key with the scim scope, as "Authorization: Bearer <token>".',
      );
    }
    if (decision.outcome === 'deny') throw decision.error;
    request.scimActor = decision.identity?.user;
  });

  /** After a change is stored: every replica told, then one audit entry, and one per account it switched. */
  const settled = async (
    request: FastifyRequest,
    event: AuditEventName,
    target: string,
    detail: Record<string, string | number | boolean | null>,
    effects: Effects,
  ) => {
    await announceEffects(revocations, effects);
    const actor = request.scimActor;
    audit.record(request, { event, actor, target, detail: { ...detail, method: request.method } });
    for (const userId of effects.disabled)
      audit.record(request, { event: 'user_disabled', actor, target, detail: { user_id: userId, reason: 'scim' } });
    for (const userId of effects.enabled)
      audit.record(request, { event: 'user_enabled', actor, target, detail: { user_id: userId, reason: 'scim' } });
  };

  const userSettled = async (request: FastifyRequest, event: AuditEventName, change: Change<ScimUser>) => {
    const { result, effects } = change;
    await settled(request, event, result.resource.userName, userDetail(result, effects), effects);
    return result;
  };
  const groupSettled = async (request: FastifyRequest, event: AuditEventName, change: Change<ScimGroup>) => {
    const { result, effects } = change;
    await settled(request, event, result.displayName, groupDetail(result, effects), effects);
    return result;
  };

  const userBody = (user: ScimUser) => {
    const { schemas: userSchemas, ...attributes } = user.resource;
    return {
      schemas: userSchemas,
      id: user.id,
      ...attributes,
      meta: metaOf({
        resourceType: 'User',
        created: user.created,
        lastModified: user.lastModified,
        location: `${base}/Users/${user.id}`,
        version: user.version,
      }),
    };
  };
  const groupBody = (group: ScimGroup, withMembers = true) => ({
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'],
    id: group.id,
    displayName: group.displayName,
    ...(group.externalId === null ? {} : { externalId: group.externalId }),
    ...(withMembers
      ? { members: group.members.map((member) => ({ ...member, $ref: `${base}/Users/${member.value}` })) }
      : {}),
    meta: metaOf({
      resourceType: 'Group',
      created: group.created,
      lastModified: group.lastModified,
      location: `${base}/Groups/${group.id}`,
      version: group.version,
    }),
  });
  const userDetail = (user: ScimUser, effects: Effects) => ({
    scim_id: user.id,
    user_name: user.resource.userName,
    active: user.resource.active,
    user_id: user.userId,
    ...(effects.accessChanged.length ? { access_changed: effects.accessChanged.length } : {}),
  });

  app.get('/ServiceProviderConfig', async (_request, reply) => send(reply, 200, serviceProviderConfig(base)));
  app.get('/ResourceTypes', async (_request, reply) => send(reply, 200, listBody(resourceTypes(base), 1, 2)));
  app.get<{ Params: { id: string } }>('/ResourceTypes/:id', async (request, reply) =>
    send(
      reply,
      200,
      found(
        resourceTypes(base).find((type) => type.id === request.params.id),
        'ResourceType',
        request.params.id,
      ),
    ),
  );
  app.get('/Schemas', async (_request, reply) => send(reply, 200, listBody(schemas(base), 1, 3)));
  app.get<{ Params: { id: string } }>('/Schemas/:id', async (request, reply) =>
    send(
      reply,
      200,
      found(
        schemas(base).find((schema) => schema.id === request.params.id),
        'Schema',
        request.params.id,
      ),
    ),
  );

  app.get<{ Querystring: ListQuery }>('/Users', async (request, reply) => {
    const { filter, startIndex, count } = listParameters(request.query, USER_FILTERS);
    const page = await store.listUsers(filter, startIndex, count);
    return send(reply, 200, listBody(page.items.map(userBody), startIndex, page.total));
  });
  app.post('/Users', async (request, reply) => {
    const result = await userSettled(
      request,
      'scim_user_created',
      await store.createUser(toUserResource(request.body)),
    );
    return send(reply, 201, userBody(result), { location: `${base}/Users/${result.id}` });
  });
  app.get<{ Params: { id: string } }>('/Users/:id', async (request, reply) =>
    send(reply, 200, userBody(found(await store.getUser(request.params.id), 'User', request.params.id))),
  );
  app.put<{ Params: { id: string } }>('/Users/:id', async (request, reply) => {
    const result = await userSettled(
      request,
      'scim_user_changed',
      await store.replaceUser(request.params.id, toUserResource(request.body)),
    );
    return send(reply, 200, userBody(result));
  });
  app.patch<{ Params: { id: string } }>('/Users/:id', async (request, reply) => {
    const result = await userSettled(
      request,
      'scim_user_changed',
      await store.patchUser(request.params.id, patchOperationsOf(request.body)),
    );
    return send(reply, 200, userBody(result));
  });
  app.delete<{ Params: { id: string } }>('/Users/:id', async (request, reply) => {
    await userSettled(request, 'scim_user_deleted', await store.deleteUser(request.params.id));
    return reply.code(204).send();
  });

  app.get<{ Querystring: ListQuery }>('/Groups', async (request, reply) => {
    const { filter, startIndex, count, withMembers } = listParameters(request.query, GROUP_FILTERS);
    const page = await store.listGroups(filter, startIndex, count);
    return send(
      reply,
      200,
      listBody(
        page.items.map((group) => groupBody(group, withMembers)),
        startIndex,
        page.total,
      ),
    );
  });
  app.post('/Groups', async (request, reply) => {
    const result = await groupSettled(
      request,
      'scim_group_created',
      await store.createGroup(toGroupInput(request.body)),
    );
    return send(reply, 201, groupBody(result), { location: `${base}/Groups/${result.id}` });
  });
  app.get<{ Params: { id: string }; Querystring: ListQuery }>('/Groups/:id', async (request, reply) => {
    const group = found(await store.getGroup(request.params.id), 'Group', request.params.id);
    return send(reply, 200, groupBody(group, listParameters(request.query, GROUP_FILTERS).withMembers));
  });
  app.put<{ Params: { id: string } }>('/Groups/:id', async (request, reply) => {
    const result = await groupSettled(
      request,
      'scim_group_changed',
      await store.replaceGroup(request.params.id, toGroupInput(request.body)),
    );
    return send(reply, 200, groupBody(result));
  });
  app.patch<{ Params: { id: string } }>('/Groups/:id', async (request, reply) => {
    const result = await groupSettled(
      request,
      'scim_group_changed',
      await store.patchGroup(request.params.id, patchOperationsOf(request.body)),
    );
    return send(reply, 200, groupBody(result));
  });
  app.delete<{ Params: { id: string } }>('/Groups/:id', async (request, reply) => {
    await groupSettled(request, 'scim_group_deleted', await store.deleteGroup(request.params.id));
    return reply.code(204).send();
  });
}

function groupDetail(group: ScimGroup, effects: Effects) {
  return { scim_id: group.id, members: group.members.length, access_changed: effects.accessChanged.length };
}

function send(reply: FastifyReply, status: number, body: unknown, headers: Record<string, string> = {}) {
  return reply
    .code(status)
    .headers(headers)
    .header('cache-control', 'no-store')
    .type(SCIM_JSON)
    .send(JSON.stringify(body));
}

function found<T>(value: T | undefined, kind: string, id: string): T {
  if (value === undefined) throw new ScimError(404, undefined, `No ${kind} with id ${id.slice(0, 100)}.`);
  return value;
}

function listBody(resources: unknown[], startIndex: number, total: number) {
  return {
    schemas: [LIST_SCHEMA],
    totalResults: total,
    startIndex,
    itemsPerPage: resources.length,
    Resources: resources,
  };
}

/**
 * RFC 7644 3.4.2: `filter`, 1-based `startIndex` (below 1 is 1) and `count` (negative is 0, capped
 * at MAX_LIST_COUNT); `excludedAttributes=members`, which Entra ID sends for groups, is honoured.
 */
function listParameters(query: ListQuery, filters: Record<string, string>) {
  const one = (value: unknown) => (Array.isArray(value) ? undefined : (value as string | undefined));
  const integer = (value: unknown, fallback: number) => {
    const text = one(value);
    if (text === undefined || text === '') return fallback;
    if (!/^-?\d{1,9}$/.test(text)) throw invalid('invalidValue', 'startIndex and count must be integers.');
    return Number(text);
  };
  const filterText = one(query.filter);
  const filter: Equality[] =
    filterText === undefined || filterText.trim() === '' ? [] : parseFilter(filterText, (name) => filters[name]);
  const excluded = (one(query.excludedAttributes) ?? '')
    .toLowerCase()
    .split(',')
    .map((name) => name.trim());
  return {
    filter,
    startIndex: Math.max(1, integer(query.startIndex, 1)),
    count: Math.min(MAX_LIST_COUNT, Math.max(0, integer(query.count, 100))),
    withMembers: !excluded.includes('members'),
  };
}
