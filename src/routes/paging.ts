import type { PageRequest } from '../keys/store.js';

/** No list answer holds more than this many items, whatever the caller asks. */
export const MAX_PAGE_SIZE = 100;

/**
 * Query-string schema of a paged list. Values are strings (no coercion); a repeated parameter
 * arrives as an array and fails the schema with 400, never reaching a query.
 */
export const PAGE_QUERY_PROPERTIES = {
  limit: { type: 'string', pattern: '^[1-9][0-9]{0,2}$' },
  after: { type: 'string', minLength: 1, maxLength: 100 },
} as const;

export interface PageQuery {
  limit?: string;
  after?: string;
}

export function pageRequestOf(query: PageQuery | undefined): PageRequest {
  const limit = Math.min(Number(query?.limit ?? MAX_PAGE_SIZE), MAX_PAGE_SIZE);
  return { limit, after: query?.after };
}

/** OpenAI's list shape: `has_more`, and `last_id` to pass as `after` for the next page. */
export function listAnswer<T extends { id: string }>(page: { data: T[]; has_more: boolean }) {
  return {
    object: 'list',
    data: page.data,
    has_more: page.has_more,
    first_id: page.data[0]?.id ?? null,
    last_id: page.data.at(-1)?.id ?? null,
  };
}
