import { invalid } from './errors.js';

export const USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';
export const ENTERPRISE_USER_SCHEMA = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
export const GROUP_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:Group';
/** Entra ID names this schema in every group it creates; it adds nothing Gatehouse reads. */
export const ENTRA_GROUP_SCHEMA = 'http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group';
export const PATCH_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
export const LIST_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:ListResponse';

/** Largest body a SCIM request may have: a group PATCH with a few thousand members fits. */
export const SCIM_BODY_LIMIT_BYTES = 1024 * 1024;
/** Most resources one list answer holds, whatever `count` asks (RFC 7644 3.4.2.4 lets the server cap it). */
export const MAX_LIST_COUNT = 200;

/** RFC 7643 4.1 attributes of a User that are kept; anything else a provider sends is dropped. */
const USER_ATTRIBUTES = [
  'userName',
  'externalId',
  'name',
  'displayName',
  'nickName',
  'profileUrl',
  'title',
  'userType',
  'preferredLanguage',
  'locale',
  'timezone',
  'active',
  'emails',
  'phoneNumbers',
  'ims',
  'photos',
  'addresses',
  'entitlements',
  'roles',
  'x509Certificates',
];
const USER_ATTRIBUTE_NAMES = new Map(USER_ATTRIBUTES.map((name) => [name.toLowerCase(), name]));

/** Attribute names compare without case (RFC 7643 2.1); the stored resource uses the RFC's spelling. */
export function canonicalUserAttribute(name: string): string {
  return USER_ATTRIBUTE_NAMES.get(name.toLowerCase()) ?? name;
}

/** What a stored User resource holds: the provider's attributes, with the ones Gatehouse acts on checked. */
export interface UserResource {
  schemas: string[];
  userName: string;
  externalId?: string;
  active: boolean;
  [attribute: string]: unknown;
}

export interface GroupInput {
  displayName: string;
  externalId: string | null;
  /** SCIM ids of users; undefined when the request named none. */
  members: string[] | undefined;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Entra ID sends booleans as the strings "True" and "False"; any case is read. */
export function toBoolean(value: unknown, attribute: string): boolean {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string' && /^(true|false)$/i.test(value)) return value.toLowerCase() === 'true';
  throw invalid('invalidValue', `${attribute} must be true or false.`);
}

function optionalString(value: unknown, attribute: string, max = 256): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value.length > max) {
    throw invalid('invalidValue', `${attribute} must be a string of at most ${max} characters.`);
  }
  return value;
}

function checkSchemas(value: unknown, core: string, known: readonly string[]): string[] {
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw invalid('invalidSyntax', `schemas must be a list naming ${core}.`);
  }
  const schemas = value as string[];
  if (!schemas.some((schema) => schema.toLowerCase() === core.toLowerCase())) {
    throw invalid('invalidSyntax', `schemas must name ${core}.`);
  }
  const unknown = schemas.find((schema) => !known.some((k) => k.toLowerCase() === schema.toLowerCase()));
  if (unknown !== undefined) {
    throw invalid('invalidSyntax', `the schema ${unknown} is not supported; Gatehouse knows ${known.join(', ')}.`);
  }
  return [...new Set(schemas.map((schema) => known.find((k) => k.toLowerCase() === schema.toLowerCase())!))];
}

/**
 * A User as POST, PUT or a PATCH leaves it: `userName` present, `active` a boolean (true unless
 * said otherwise), the enterprise extension kept under its URN. `id`, `meta`, `groups` (read-only,
 * RFC 7643 4.1.2) and `password` (Okta sends one; Gatehouse never signs anyone in with it) are dropped.
 */
export function toUserResource(body: unknown): UserResource {
  if (!isObject(body)) throw invalid('invalidSyntax', 'The body must be a JSON object.');
  const schemas = checkSchemas(body.schemas, USER_SCHEMA, [USER_SCHEMA, ENTERPRISE_USER_SCHEMA]);
  const resource: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    if (key.toLowerCase() === ENTERPRISE_USER_SCHEMA.toLowerCase()) {
      if (!isObject(value)) throw invalid('invalidValue', `${ENTERPRISE_USER_SCHEMA} must be an object.`);
      if (!schemas.includes(ENTERPRISE_USER_SCHEMA)) schemas.push(ENTERPRISE_USER_SCHEMA);
      resource[ENTERPRISE_USER_SCHEMA] = value;
    } else if (key.startsWith('urn:')) {
      throw invalid('invalidSyntax', `the schema of ${key} is not supported.`);
    } else {
      const name = USER_ATTRIBUTE_NAMES.get(key.toLowerCase());
      if (name !== undefined && value !== null) resource[name] = value;
    }
  }
  const userName = optionalString(resource.userName, 'userName');
  if (!userName?.trim()) throw invalid('invalidValue', 'userName is required: a non-empty string.');
  const externalId = optionalString(resource.externalId, 'externalId');
  return {
    ...resource,
    schemas,
    userName,
    ...(externalId === undefined ? {} : { externalId }),
    active: resource.active === undefined ? true : toBoolean(resource.active, 'active'),
  };
}

/** A Group from POST or PUT; members are checked to exist by the store. */
export function toGroupInput(body: unknown): GroupInput {
  if (!isObject(body)) throw invalid('invalidSyntax', 'The body must be a JSON object.');
  checkSchemas(body.schemas, GROUP_SCHEMA, [GROUP_SCHEMA, ENTRA_GROUP_SCHEMA]);
  const field = (name: string) => Object.entries(body).find(([key]) => key.toLowerCase() === name.toLowerCase())?.[1];
  const displayName = optionalString(field('displayName'), 'displayName');
  if (!displayName?.trim()) throw invalid('invalidValue', 'displayName is required: a non-empty string.');
  const members = field('members');
  return {
    displayName,
    externalId: optionalString(field('externalId'), 'externalId') ?? null,
    members: members === undefined || members === null ? undefined : memberIdsOf(members),
  };
}

/** `[{ "value": "<user id>" }, ...]`, the shape of RFC 7643 4.2 `members` (and of PATCH values). */
export function memberIdsOf(value: unknown): string[] {
  const items = Array.isArray(value) ? value : [value];
  return [
    ...new Set(
      items.map((item) => {
        const id = isObject(item) ? item.value : undefined;
        if (typeof id !== 'string' || id === '')
          throw invalid('invalidValue', 'Each member must be { "value": "<user id>" }.');
        return id;
      }),
    ),
  ];
}

export interface Meta {
  resourceType: 'User' | 'Group';
  created: number;
  lastModified: number;
  location: string;
  version: number;
}

export function metaOf(meta: Meta): Record<string, unknown> {
  return {
    resourceType: meta.resourceType,
    created: new Date(meta.created).toISOString(),
    lastModified: new Date(meta.lastModified).toISOString(),
    location: meta.location,
    version: `W/"${meta.version}"`,
  };
}

/** RFC 7644 4: what this service provider supports, for clients that ask before they send. */
export function serviceProviderConfig(base: string): Record<string, unknown> {
  return {
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig'],
    patch: { supported: true },
    bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
    filter: { supported: true, maxResults: MAX_LIST_COUNT },
    changePassword: { supported: false },
    sort: { supported: false },
    etag: { supported: false },
    authenticationSchemes: [
      {
        type: 'oauthbearertoken',
        name: 'Bearer token',
        description: 'scim.token from the configuration, or an administrator’s API key with the scim scope',
        primary: true,
      },
    ],
    meta: { resourceType: 'ServiceProviderConfig', location: `${base}/ServiceProviderConfig` },
  };
}

export function resourceTypes(base: string): Record<string, unknown>[] {
  return [
    {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:ResourceType'],
      id: 'User',
      name: 'User',
      endpoint: '/Users',
      schema: USER_SCHEMA,
      schemaExtensions: [{ schema: ENTERPRISE_USER_SCHEMA, required: false }],
      meta: { resourceType: 'ResourceType', location: `${base}/ResourceTypes/User` },
    },
    {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:ResourceType'],
      id: 'Group',
      name: 'Group',
      endpoint: '/Groups',
      schema: GROUP_SCHEMA,
      meta: { resourceType: 'ResourceType', location: `${base}/ResourceTypes/Group` },
    },
  ];
}

const attribute = (name: string, type: string, extra: Record<string, unknown> = {}) => ({
  name,
  type,
  multiValued: false,
  required: false,
  caseExact: false,
  mutability: 'readWrite',
  returned: 'default',
  uniqueness: 'none',
  ...extra,
});

/** RFC 7643 7: the attributes Gatehouse acts on; others are stored and returned as sent. */
export function schemas(base: string): Record<string, unknown>[] {
  const schema = (id: string, name: string, attributes: unknown[]) => ({
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:Schema'],
    id,
    name,
    attributes,
    meta: { resourceType: 'Schema', location: `${base}/Schemas/${id}` },
  });
  return [
    schema(USER_SCHEMA, 'User', [
      attribute('userName', 'string', { required: true, uniqueness: 'server' }),
      attribute('externalId', 'string', { caseExact: true }),
      attribute('active', 'boolean'),
      attribute('displayName', 'string'),
      attribute('name', 'complex'),
      attribute('emails', 'complex', { multiValued: true }),
    ]),
    schema(ENTERPRISE_USER_SCHEMA, 'EnterpriseUser', [
      attribute('employeeNumber', 'string'),
      attribute('department', 'string'),
      attribute('manager', 'complex'),
    ]),
    schema(GROUP_SCHEMA, 'Group', [
      attribute('displayName', 'string', { required: true }),
      attribute('externalId', 'string', { caseExact: true }),
      attribute('members', 'complex', { multiValued: true }),
    ]),
  ];
}
