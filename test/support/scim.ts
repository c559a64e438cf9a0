import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { ScimError } from '../../src/scim/errors.js';

export const SCIM_JSON = 'application/scim+json';

/** One recorded request of a provider, with what the answer must hold; or a point where the test checks effects. */
type Step =
  | {
      note?: string;
      method: string;
      path: string;
      body?: unknown;
      status: number;
      expect?: Record<string, unknown>;
      /** Variables taken from the answer: name -> top-level attribute. */
      capture?: Record<string, string>;
    }
  | { checkpoint: string };

/** A SCIM request to `base` (…/scim/v2) with a bearer token, the way providers send them. */
export async function scimFetch(
  base: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; type: string | null; body: Record<string, unknown> }> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: SCIM_JSON,
      ...(body === undefined ? {} : { 'content-type': `${SCIM_JSON}; charset=utf-8` }),
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    // A hung answer fails here, naming the request, rather than as the test's timeout.
    signal: AbortSignal.timeout(10_000),
  }).catch((error: unknown) => {
    throw new Error(`${method} ${path} got no answer: ${String(error)}`);
  });
  const text = await response.text().catch((error: unknown) => {
    throw new Error(`${method} ${path} answered ${response.status} but its body never ended: ${String(error)}`);
  });
  return {
    status: response.status,
    type: response.headers.get('content-type'),
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
  };
}

function fill<T>(value: T, vars: Record<string, string>): T {
  if (typeof value === 'string')
    return value.replace(/\{\{(\w+)\}\}/g, (_, name: string) => vars[name] ?? `{{${name}}}`) as T;
  if (Array.isArray(value)) return value.map((item: unknown) => fill(item, vars)) as T;
  if (typeof value === 'object' && value !== null)
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, fill(item, vars)])) as T;
  return value;
}

/**
 * Plays a recorded sequence (test/fixtures/scim/*.json) against a running gateway: each answer
 * must have the recorded status and hold what the step expects; at each checkpoint the test
 * checks what the sequence so far did to sign-in, sessions and keys.
 */
export async function replay(
  fixture: string,
  target: { base: string; token: string; vars: Record<string, string> },
  onCheckpoint: (name: string, vars: Record<string, string>) => Promise<void>,
): Promise<Record<string, string>> {
  const { steps } = JSON.parse(readFileSync(new URL(`../fixtures/scim/${fixture}`, import.meta.url), 'utf8')) as {
    steps: Step[];
  };
  const vars = { ...target.vars };
  for (const step of steps) {
    if ('checkpoint' in step) {
      await onCheckpoint(step.checkpoint, vars);
      continue;
    }
    const path = fill(step.path, vars);
    const answer = await scimFetch(target.base, target.token, step.method, path, fill(step.body, vars));
    const label = `${step.method} ${path} (${step.note ?? 'recorded step'})`;
    expect(answer.status, `${label}: ${JSON.stringify(answer.body)}`).toBe(step.status);
    if (answer.status !== 204) expect(answer.type, label).toContain(SCIM_JSON);
    if (step.expect) expect(answer.body, label).toMatchObject(fill(step.expect, vars));
    for (const [name, attribute] of Object.entries(step.capture ?? {})) vars[name] = String(answer.body[attribute]);
  }
  return vars;
}

/** The RFC 7644 `scimType` `run` is refused with; undefined when it is not refused. */
export function scimTypeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    if (error instanceof ScimError) return error.scimType;
    throw error;
  }
  return undefined;
}
