import { invalid } from './errors.js';
import { parseFilter, type Equality } from './filter.js';
import {
  canonicalUserAttribute,
  ENTERPRISE_USER_SCHEMA,
  isObject,
  memberIdsOf,
  PATCH_SCHEMA,
  USER_SCHEMA,
} from './resources.js';

export type PatchOp = 'add' | 'replace' | 'remove';

export interface PatchOperation {
  op: PatchOp;
  path: string | undefined;
  value: unknown;
}

/** Where a PATCH path points (RFC 7644 3.5.2): an attribute, maybe filtered, maybe a sub-attribute. */
interface Path {
  /** Set for the enterprise extension's attributes, which live under its URN. */
  extension: string | undefined;
  attribute: string;
  filter: Equality[] | undefined;
  sub: string | undefined;
}

const MAX_OPERATIONS = 1_000;
const PATH = /^([A-Za-z][A-Za-z0-9_$-]*)(?:\[(.+)\])?(?:\.([A-Za-z][A-Za-z0-9_$-]*))?$/;

/**
 * The operations of a PatchOp body. `op` is read without case: Entra ID sends "Replace" and "Add"
 * where RFC 7644 3.5.2 writes them in lower case.
 */
export function patchOperationsOf(body: unknown): PatchOperation[] {
  if (!isObject(body)) throw invalid('invalidSyntax', 'The body must be a JSON object.');
  const schemas = body.schemas;
  if (!Array.isArray(schemas) || !schemas.includes(PATCH_SCHEMA)) {
    throw invalid('invalidSyntax', `schemas must be ["${PATCH_SCHEMA}"].`);
  }
  const operations = body.Operations ?? body.operations;
  if (!Array.isArray(operations) || operations.length === 0 || operations.length > MAX_OPERATIONS) {
    throw invalid('invalidSyntax', `Operations must be a list of 1 to ${MAX_OPERATIONS} operations.`);
  }
  return operations.map((operation: unknown) => {
    if (!isObject(operation)) throw invalid('invalidSyntax', 'Each operation must be an object.');
    const op = typeof operation.op === 'string' ? operation.op.toLowerCase() : '';
    if (op !== 'add' && op !== 'replace' && op !== 'remove') {
      throw invalid('invalidSyntax', 'op must be add, replace or remove.');
    }
    const path = operation.path;
    if (path !== undefined && (typeof path !== 'string' || path === '' || path.length > 500)) {
      throw invalid('invalidPath', 'path must be a non-empty string of at most 500 characters.');
    }
    if (op === 'remove' && path === undefined) throw invalid('noTarget', 'A remove operation needs a path.');
    if (op !== 'remove' && operation.value === undefined)
      throw invalid('invalidValue', `An ${op} operation needs a value.`);
    return { op, path, value: operation.value };
  });
}

function parsePath(text: string): Path {
  let rest = text;
  let extension: string | undefined;
  const lower = text.toLowerCase();
  if (lower.startsWith(`${ENTERPRISE_USER_SCHEMA.toLowerCase()}:`)) {
    extension = ENTERPRISE_USER_SCHEMA;
    rest = text.slice(ENTERPRISE_USER_SCHEMA.length + 1);
  } else if (lower.startsWith(`${USER_SCHEMA.toLowerCase()}:`)) {
    rest = text.slice(USER_SCHEMA.length + 1);
  } else if (lower.startsWith('urn:')) {
    throw invalid('invalidPath', `the schema of ${text.slice(0, 200)} is not supported.`);
  }
  const match = PATH.exec(rest);
  if (!match) throw invalid('invalidPath', `cannot read the path ${JSON.stringify(text.slice(0, 200))}.`);
  const [, attribute, filter, sub] = match;
  return {
    extension,
    attribute: attribute!,
    filter: filter === undefined ? undefined : parseFilter(filter, (name) => name),
    sub,
  };
}

/** The key of `name` in `node`, compared without case; else how a new one is spelt. */
function keyIn(node: Record<string, unknown>, name: string, canonical: (name: string) => string): string {
  return Object.keys(node).find((key) => key.toLowerCase() === name.toLowerCase()) ?? canonical(name);
}

function matches(item: unknown, filter: readonly Equality[]): boolean {
  if (!isObject(item)) return false;
  return filter.every(({ attribute, value }) => {
    const key = Object.keys(item).find((name) => name.toLowerCase() === attribute);
    const actual = key === undefined ? undefined : item[key];
    return typeof actual === 'string' && actual.toLowerCase() === value.toLowerCase();
  });
}

function applyAt(resource: Record<string, unknown>, path: Path, op: PatchOp, value: unknown): void {
  let container = resource;
  let canonical = canonicalUserAttribute;
  if (path.extension) {
    const existing = resource[path.extension];
    container = isObject(existing) ? existing : {};
    resource[path.extension] = container;
    canonical = (name) => name;
  }
  const key = keyIn(container, path.attribute, canonical);
  const current = container[key];
  if (path.filter) {
    const items = Array.isArray(current) ? [...(current as unknown[])] : [];
    const hit = items.filter((item) => matches(item, path.filter!));
    if (op === 'remove') {
      container[key] = path.sub
        ? items.map((item) => (hit.includes(item) ? omit(item as Record<string, unknown>, path.sub!) : item))
        : items.filter((item) => !hit.includes(item));
      return;
    }
    if (hit.length === 0) {
      // Entra ID writes `emails[type eq "work"].value` for a user who has no work email yet: the
      // filter describes the item to create (RFC 7644 3.5.2.1 leaves it open; this is what it expects).
      const created: Record<string, unknown> = Object.fromEntries(path.filter.map((f) => [f.attribute, f.value]));
      if (path.sub) created[path.sub] = value;
      else if (isObject(value)) Object.assign(created, value);
      items.push(created);
    } else {
      for (const item of hit as Record<string, unknown>[]) {
        if (path.sub) item[keyIn(item, path.sub, (name) => name)] = value;
        else if (isObject(value)) Object.assign(item, value);
      }
    }
    container[key] = items;
    return;
  }
  if (path.sub) {
    const parent = isObject(current) ? current : {};
    if (op === 'remove') delete parent[keyIn(parent, path.sub, (name) => name)];
    else parent[keyIn(parent, path.sub, (name) => name)] = value;
    container[key] = parent;
    return;
  }
  if (op === 'remove') delete container[key];
  else if (op === 'add' && Array.isArray(current) && Array.isArray(value)) container[key] = [...current, ...value];
  else container[key] = value;
}

function omit(item: Record<string, unknown>, sub: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(item).filter(([key]) => key.toLowerCase() !== sub.toLowerCase()));
}

/**
 * Applies PATCH operations to a copy of a User's attributes. Without a path the value is an object
 * of attributes (Okta's `{"active": false}`); its keys may be paths themselves (Entra ID sends
 * `name.givenName` and enterprise attributes by their full URN).
 */
export function applyUserPatch(resource: Record<string, unknown>, operations: readonly PatchOperation[]) {
  const patched = structuredClone(resource);
  for (const { op, path, value } of operations) {
    if (path !== undefined) {
      applyAt(patched, parsePath(path), op, value);
      continue;
    }
    if (!isObject(value)) throw invalid('invalidValue', 'Without a path, the value must be an object of attributes.');
    for (const [key, item] of Object.entries(value)) {
      if (key.toLowerCase() === ENTERPRISE_USER_SCHEMA.toLowerCase() && isObject(item)) {
        for (const [name, sub] of Object.entries(item))
          applyAt(patched, parsePath(`${ENTERPRISE_USER_SCHEMA}:${name}`), op, sub);
      } else if (key.toLowerCase() === 'schemas' || key.toLowerCase() === 'id') {
        continue;
      } else {
        applyAt(patched, parsePath(key), op, item);
      }
    }
  }
  return patched;
}

/** What a Group PATCH leaves: its name, its external id and its members (SCIM user ids). */
export interface GroupState {
  displayName: string;
  externalId: string | null;
  members: Set<string>;
}

/**
 * Applies PATCH operations to a Group. Members come as Okta sends them (`add` to `members` with a
 * list, `remove` with `members[value eq "<id>"]`) and as Entra ID does (`Remove` on `members` with a
 * list of values); a `replace` without a path may rename the group (Okta) or set its members.
 */
export function applyGroupPatch(group: GroupState, operations: readonly PatchOperation[]): GroupState {
  const next: GroupState = { ...group, members: new Set(group.members) };
  const set = (attribute: string, op: PatchOp, value: unknown, filter?: Equality[]) => {
    const name = attribute.toLowerCase();
    if (name === 'members') {
      if (filter) {
        const ids = filter.filter((f) => f.attribute === 'value').map((f) => f.value);
        if (op !== 'remove' || ids.length !== filter.length) {
          throw invalid('invalidPath', 'A members filter may only name value, in a remove.');
        }
        ids.forEach((id) => next.members.delete(id));
      } else if (op === 'remove') {
        if (value === undefined) next.members.clear();
        else memberIdsOf(value).forEach((id) => next.members.delete(id));
      } else {
        if (op === 'replace') next.members.clear();
        memberIdsOf(value).forEach((id) => next.members.add(id));
      }
    } else if (name === 'displayname') {
      if (op === 'remove' || typeof value !== 'string' || !value.trim() || value.length > 256) {
        throw invalid('invalidValue', 'displayName must be a non-empty string of at most 256 characters.');
      }
      next.displayName = value;
    } else if (name === 'externalid') {
      if (op !== 'remove' && (typeof value !== 'string' || value.length > 256)) {
        throw invalid('invalidValue', 'externalId must be a string of at most 256 characters.');
      }
      next.externalId = op === 'remove' ? null : (value as string);
    } else if (name !== 'id' && name !== 'schemas' && name !== 'meta') {
      throw invalid('invalidPath', `Groups have no attribute ${attribute.slice(0, 100)} that Gatehouse keeps.`);
    }
  };
  for (const { op, path, value } of operations) {
    if (path === undefined) {
      if (!isObject(value)) throw invalid('invalidValue', 'Without a path, the value must be an object of attributes.');
      for (const [key, item] of Object.entries(value)) set(key, op, item);
      continue;
    }
    const parsed = parsePath(path.replace(/^urn:ietf:params:scim:schemas:core:2\.0:Group:/i, ''));
    if (parsed.extension || parsed.sub)
      throw invalid('invalidPath', `cannot read the path ${JSON.stringify(path.slice(0, 200))}.`);
    set(parsed.attribute, op, value, parsed.filter);
  }
  return next;
}
