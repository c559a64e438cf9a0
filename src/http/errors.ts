import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';

const TYPE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'invalid_request_error',
  405: 'invalid_request_error',
  409: 'invalid_request_error',
  413: 'invalid_request_error',
  429: 'rate_limit_error',
};

const JSON_TYPE = 'application/json; charset=utf-8';

/** The error body OpenAI's API returns, which OpenAI-compatible clients already know how to show. */
function apiErrorBody(status: number, code: string, message: string): string {
  const type = TYPE_BY_STATUS[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
  return JSON.stringify({ error: { message, type, code: code.toLowerCase(), param: null } });
}

/** Answers one of the gateway's own routes with an API error. */
export function sendApiError(
  reply: FastifyReply,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): FastifyReply {
  return reply
    .code(status)
    .headers(headers)
    .type(JSON_TYPE)
    .send(apiErrorBody(status, code, message));
}

/** Answers a platform request with an API error; the platform path runs without the web framework. */
export function writeApiError(
  response: ServerResponse,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): void {
  const body = apiErrorBody(status, code, message);
  response.writeHead(status, { ...headers, 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(body) });
  response.end(body);
}
