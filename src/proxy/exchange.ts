import type { Readable, Transform } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { ForbiddenError, HttpError } from '../errors.js';
import { jsonUsage, sseUsageTap, watchJsonUsage, type TokenUsage } from '../usage/extract.js';

/**
 * What the gateway does to one exchange with the platform beyond passing it through: a rewritten
 * request body, a filtered model list, usage read from the answer.
 */
export interface ExchangePlan {
  /** Replaces the request body (already read); undefined streams the client's body through. */
  body?: Buffer;
  /** GET /v1/models answers are cut down to these models. */
  filterModels?: readonly string[];
  /** Drop the usage-only stream chunk the gateway asked for on the client's behalf. */
  stripUsageChunk: boolean;
  onUsage?: (usage: TokenUsage) => void;
  /** The body's `model`, when the body was read: a label of the duration metrics. */
  model?: string;
}

/** Paths whose streaming answers report usage when asked with `stream_options.include_usage`. */
const USAGE_ON_REQUEST = new Set(['/v1/chat/completions', '/v1/completions']);
/** OpenAI- and Lamini-style paths whose answers report `usage`. */
const USAGE_BEARING = /(?:completions|embeddings)\/?$/;
const MAX_JSON_BODY_BYTES = 16 * 1024 * 1024;
const MAX_MODELS_LIST_BYTES = 4 * 1024 * 1024;

export interface PlanInput {
  path: string;
  /** The key's allowed models; undefined = any. */
  models?: readonly string[];
  onUsage?: (usage: TokenUsage) => void;
}

function isJson(contentType: unknown): boolean {
  return typeof contentType === 'string' && /^application\/(?:[\w.+-]*\+)?json\b/i.test(contentType);
}

/**
 * Reads a whole stream, refusing it once it passes `limit` bytes. Plain listeners rather than
 * `for await`: an async iterator costs several promises per request on the proxy's hot path.
 */
function readAll(stream: Readable, limit: number, tooLarge: () => HttpError): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) {
        parts.push(chunk);
        return;
      }
      reject(tooLarge());
      stream.destroy();
    };
    stream.on('data', onData);
    stream.once('end', () => resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size)));
    stream.once('error', reject);
  });
}

async function readBody(request: IncomingMessage): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > MAX_JSON_BODY_BYTES) throw tooLarge();
  return readAll(request, MAX_JSON_BODY_BYTES, tooLarge);
}

function tooLarge(): HttpError {
  return new HttpError(413, 'request_too_large', `JSON request bodies may be at most ${MAX_JSON_BODY_BYTES} bytes.`);
}

/**
 * Reads a JSON request body only when something must be checked or changed in it: the key's model
 * allow-list, or a streaming completion whose usage the gateway must count (it then asks for
 * `stream_options.include_usage` and removes that chunk again). Everything else streams untouched.
 */
export async function planExchange(request: IncomingMessage, input: PlanInput): Promise<ExchangePlan> {
  // Only answers that can carry token usage are read on their way back; the rest pass untouched.
  const onUsage = USAGE_BEARING.test(input.path) ? input.onUsage : undefined;
  const plan: ExchangePlan = { stripUsageChunk: false, onUsage };
  if (request.method === 'GET' && input.models && /^\/v1\/models\/?$/.test(input.path))
    plan.filterModels = input.models;
  const hasBody = request.headers['content-length'] !== undefined || request.headers['transfer-encoding'] !== undefined;
  const wantsUsage =
    onUsage !== undefined && USAGE_ON_REQUEST.has(input.path) && isJson(request.headers['content-type']);
  // A key limited to some models has every body checked, whatever its label or method, so a
  // request cannot reach another model by calling itself text/plain.
  if (!hasBody || (!input.models && !wantsUsage)) return plan;
  const raw = await readBody(request);
  plan.body = raw;
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    if (input.models) throw new HttpError(400, 'invalid_json', 'The request body is not valid JSON.');
    return plan;
  }
  const body =
    typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as Record<string, unknown>) : undefined;
  if (typeof body?.model === 'string') plan.model = body.model;
  if (input.models && (typeof body?.model !== 'string' || !input.models.includes(body.model))) {
    throw new ForbiddenError(
      'model_not_allowed',
      `This API key may not use the model ${JSON.stringify(body?.model ?? null)}; it may use ${input.models.join(', ')}.`,
    );
  }
  const streamOptions = body?.stream_options as { include_usage?: unknown } | undefined;
  if (body && wantsUsage && body.stream === true && streamOptions?.include_usage !== true) {
    body.stream_options = { ...(typeof streamOptions === 'object' ? streamOptions : {}), include_usage: true };
    plan.body = Buffer.from(JSON.stringify(body));
    plan.stripUsageChunk = true;
  }
  return plan;
}

/**
 * The response body the client receives under the plan; headers are adjusted in place. A small
 * answer arrives whole (a Buffer), anything larger as the platform's stream.
 */
export async function applyPlan(
  plan: ExchangePlan,
  status: number,
  headers: Record<string, string | string[]>,
  body: Readable | Buffer,
): Promise<Readable | Buffer> {
  const contentType = headers['content-type'];
  if (plan.filterModels && status === 200 && isJson(contentType)) {
    const list = Buffer.isBuffer(body)
      ? body
      : await readAll(
          body,
          MAX_MODELS_LIST_BYTES,
          () => new HttpError(502, 'upstream_models_too_large', 'The model list is too large to filter.'),
        );
    delete headers['content-length'];
    return filterModelList(list, plan.filterModels);
  }
  if (!plan.onUsage || status >= 400) return body;
  if (Buffer.isBuffer(body)) {
    const usage = isJson(contentType) ? jsonUsage(body) : undefined;
    if (usage) plan.onUsage(usage);
    return body;
  }
  if (typeof contentType === 'string' && contentType.startsWith('text/event-stream')) {
    delete headers['content-length'];
    return through(body, sseUsageTap(plan.stripUsageChunk, plan.onUsage));
  }
  if (isJson(contentType)) watchJsonUsage(body, plan.onUsage);
  return body;
}

/**
 * Feeds the platform's stream through a tap. Unlike a bare `pipe`, failure on either side destroys
 * the other: an aborted platform request (client gone, user disabled) ends the client's stream, and
 * a client that leaves stops the platform's. Not `pipeline`, which keeps two sets of end-of-stream
 * watchers per stream: with a thousand streams open that is megabytes.
 */
function through(body: Readable, tap: Transform): Transform {
  body.once('error', (error) => tap.destroy(error));
  tap.once('close', () => body.destroy());
  return body.pipe(tap);
}

function filterModelList(body: Buffer, allowed: readonly string[]): Buffer {
  try {
    const list = JSON.parse(body.toString('utf8')) as { data?: Array<{ id?: unknown }> };
    if (!Array.isArray(list.data)) return body;
    list.data = list.data.filter((model) => typeof model?.id === 'string' && allowed.includes(model.id));
    return Buffer.from(JSON.stringify(list));
  } catch {
    // Not an OpenAI list: nothing to reveal about other models, but nothing to filter either.
    return Buffer.from(JSON.stringify({ object: 'list', data: [] }));
  }
}
