import type { IncomingHttpHeaders } from 'node:http';
import { expect } from 'vitest';

/** The error body of OpenAI's API, which every refusal of the gateway answers with. */
export interface ApiErrorBody {
  error: { message: string; type: string; code: string; param: null };
}

/** An answer already read whole: by fetch (`Headers`) or by node:http (`IncomingHttpHeaders`). */
export interface ReadAnswer {
  status: number;
  headers: Headers | IncomingHttpHeaders;
  text: string;
}

/** OpenAI's error types by status, as its client libraries map them to exception classes. */
function openAiTypeOf(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 429) return 'rate_limit_error';
  return status >= 500 ? 'api_error' : 'invalid_request_error';
}

function contentTypeOf(headers: Headers | IncomingHttpHeaders): string | null | undefined {
  return headers instanceof Headers ? headers.get('content-type') : (headers['content-type'] as string | undefined);
}

function checkApiError(answer: ReadAnswer, status: number, code: string): ApiErrorBody {
  expect(answer.status, answer.text.slice(0, 500)).toBe(status);
  expect(contentTypeOf(answer.headers)).toMatch(/^application\/json/);
  const body = JSON.parse(answer.text) as ApiErrorBody;
  expect(body).toEqual({ error: { message: expect.any(String), type: openAiTypeOf(status), code, param: null } });
  // A message says what to do next, not just a word.
  expect(body.error.message.length).toBeGreaterThan(10);
  return body;
}

/**
 * Expects an OpenAI-shaped JSON error with exactly this status, type for it, and code; returns the
 * body. A fetch `Response` is read first (so the result is a promise); an answer already read is
 * checked at once.
 */
export function expectApiError(answer: Response, status: number, code: string): Promise<ApiErrorBody>;
export function expectApiError(answer: ReadAnswer, status: number, code: string): ApiErrorBody;
export function expectApiError(
  answer: Response | ReadAnswer,
  status: number,
  code: string,
): ApiErrorBody | Promise<ApiErrorBody> {
  if (answer instanceof Response)
    return answer
      .text()
      .then((text) => checkApiError({ status: answer.status, headers: answer.headers, text }, status, code));
  return checkApiError(answer, status, code);
}
