import { expect } from 'vitest';
import type { Browserless } from './browserless.js';

/** A key as `POST /v1/auth/api-keys` answers it: the only time its secret is shown. */
export interface CreatedKey {
  id: string;
  key: string;
  name: string;
  created_at: string;
  expires_at: string | null;
  scopes: string[];
  models: string[] | null;
  requests_per_minute: number | null;
  tokens_per_minute: number | null;
}

/** A key as `GET /v1/auth/api-keys` lists it: never its secret. */
export interface ListedKey {
  id: string;
  name: string;
  stub: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
}

/** Creates a key as the account page does (same Origin) for whoever `browser` is signed in as. */
export async function createKey(
  stack: { url: string },
  browser: Browserless,
  body: Record<string, unknown> = {},
): Promise<CreatedKey> {
  const response = await browser.fetch(`${stack.url}/v1/auth/api-keys`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: stack.url },
    body: JSON.stringify({ name: 'test', ...body }),
  });
  const text = await response.text();
  expect(response.status, text).toBe(201);
  return JSON.parse(text) as CreatedKey;
}

/** The keys of whoever `browser` is signed in as. */
export async function listKeys(stack: { url: string }, browser: Browserless): Promise<ListedKey[]> {
  const response = await browser.fetch(`${stack.url}/v1/auth/api-keys`);
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return (JSON.parse(text) as { data: ListedKey[] }).data;
}
