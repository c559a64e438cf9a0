import type { Readable, Transform } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { ForbiddenError, HttpError } from '../errors.js';
import { readBody, type BodyLimit } from '../http/body.js';
import { JsonScanner, type JsonMember, type JsonOutline, type JsonShape } from '../http/json-scan.js';
import { pump } from './pump.js';
import { jsonUsage, sseUsageTap, watchJsonUsage, type StreamMeter, type TokenUsage } from '../usage/extract.js';

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
  /** With `costFacts`: the body's `max_tokens` (or `max_completion_tokens`) and its size, for a budget's estimate. */
  maxTokens?: number;
  bodyBytes?: number;
  /** Counts a streamed answer for budgets, and may cut it. */
  meter?: StreamMeter;
  /**
   * The gateway's own headers for the answer (limits, budget, warnings), written with the
   * platform's in one `writeHead`: a header set on the response beforehand would make Node copy
   * every header of the answer one by one.
   */
  answerHeaders?: Record<string, string>;
}

/** Paths whose streaming answers report usage when asked with `stream_options.include_usage`. */
const USAGE_ON_REQUEST = new Set(['/v1/chat/completions', '/v1/completions']);
/** OpenAI- and Lamini-style paths whose answers report `usage`. */
const USAGE_BEARING = /(?:completions|embeddings)\/?$/;
const MAX_MODELS_LIST_BYTES = 4 * 1024 * 1024;

/**
 * The body fields a platform reads as the model: OpenAI's `model`, Lamini's `model_name`, and on
 * Ollama's own API (`/api/...`) also `name` (its older spelling, still read by /api/show, /api/pull,
 * /api/delete, ...) and `/api/copy`'s `source` and `destination`.
 */
const MODEL_FIELDS = ['model', 'model_name'];
const OLLAMA_MODEL_FIELDS = [...MODEL_FIELDS, 'name', 'source', 'destination'];
const STREAM_FIELDS = ['stream', 'stream_options'];
const MAX_TOKENS_FIELDS = ['max_tokens', 'max_completion_tokens'];
/** `GET /v1/models/{id}` (and OpenAI's `DELETE`): the id is the rest of the path, slashes included. */
const MODEL_IN_PATH = /^\/v1\/models\/(.+)$/;
const MODEL_LIST = /^\/v1\/models\/?$/;
/** Longer values of the small fields read here are refused rather than parsed. */
const MAX_FIELD_BYTES = 16 * 1024;

/**
 * `stream` as the platforms read it: pydantic's bool (FastAPI, vLLM, Lamini) takes these strings
 * and 0/1, Python's truthiness any non-zero number. Anything else is refused, so that no spelling
 * streams without the usage tap.
 */
const STREAM_ON = new Set(['true', '1', 'yes', 'on', 't', 'y']);
const STREAM_OFF = new Set(['false', '0', 'no', 'off', 'f', 'n']);

export interface PlanInput {
  path: string;
  /** The key's allowed models; undefined = any. */
  models?: readonly string[];
  onUsage?: (usage: TokenUsage) => void;
  /** The largest body the gateway reads to check it; larger ones are refused with 413. */
  bodyLimit: BodyLimit;
  /** Read the model and `max_tokens` of answers that report usage: a budget charges them. */
  costFacts?: boolean;
}

function isJson(contentType: unknown): boolean {
  return typeof contentType === 'string' && /^application\/(?:[\w.+-]*\+)?json\b/i.test(contentType);
}

function hasBody(request: IncomingMessage): boolean {
  const length = request.headers['content-length'];
  return (length !== undefined && length !== '0') || request.headers['transfer-encoding'] !== undefined;
}

/**
 * Reads a request body only when something must be checked or changed in it: the key's model
 * allow-list, or a completion whose usage the gateway must count (a streaming one then asks for
 * `stream_options.include_usage`, and that chunk is removed again). The body is read whatever its
 * Content-Type, because platforms parse it as JSON without one (FastAPI) or whatever it says
 * (Ollama), and scanned while it arrives (http/json-scan.ts): nothing is parsed whole, so a body
 * up to the limit never blocks the event loop. Everything else streams untouched.
 */
export async function planExchange(request: IncomingMessage, input: PlanInput): Promise<ExchangePlan> {
  const { path, models } = input;
  // Only answers that can carry token usage are read on their way back; the rest pass untouched.
  const onUsage = USAGE_BEARING.test(path) ? input.onUsage : undefined;
  const plan: ExchangePlan = { stripUsageChunk: false, onUsage };
  if (models) {
    if (request.method === 'GET' && MODEL_LIST.test(path)) plan.filterModels = models;
    const inPath = MODEL_IN_PATH.exec(path)?.[1];
    if (inPath !== undefined) assertAllowed(decodedModelId(inPath), models);
  }
  const countsTokens = onUsage !== undefined && USAGE_ON_REQUEST.has(path);
  const costFacts = onUsage !== undefined && input.costFacts === true;
  // A key limited to some models has every body checked, whatever its label or method, so a
  // request cannot reach another model by calling itself text/plain.
  if (!hasBody(request) || (!models && !countsTokens && !costFacts)) return plan;
  const modelFields = models ? (path.startsWith('/api/') ? OLLAMA_MODEL_FIELDS : MODEL_FIELDS) : [];
  // `model` is always located: the duration metrics are labelled with it.
  const scanner = new JsonScanner(
    new Set(['model', ...modelFields, ...(countsTokens ? STREAM_FIELDS : []), ...(costFacts ? MAX_TOKENS_FIELDS : [])]),
  );
  const raw = await readBody(request, input.bodyLimit, (chunk) => scanner.write(chunk));
  plan.body = raw;
  if (costFacts) plan.bodyBytes = raw.length;
  // An empty body names no model and asks for no stream: the platform decides what it means.
  if (raw.length === 0) return plan;
  const shape = scanner.end();
  if (models) assertModelsAllowed(raw, shape, modelFields, models);
  const named = shape.kind === 'object' ? shape.members.findLast((member) => member.name === 'model') : undefined;
  const model = named && valueOf(raw, named);
  if (typeof model === 'string') plan.model = model;
  if (costFacts && shape.kind === 'object') plan.maxTokens = maxTokensOf(raw, shape);
  // Anything that is not one JSON object is the platform's to refuse.
  if (countsTokens && shape.kind === 'object') plan.body = withUsageTap(raw, shape, plan);
  return plan;
}

/** The answer's token cap as the platform reads it (the last member of either name), when it is one. */
function maxTokensOf(raw: Buffer, outline: JsonOutline): number | undefined {
  const member = outline.members.findLast((candidate) => MAX_TOKENS_FIELDS.includes(candidate.name));
  const value = member && valueOf(raw, member);
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined;
}

function decodedModelId(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function modelNotAllowed(model: unknown, models: readonly string[]): ForbiddenError {
  return new ForbiddenError(
    'model_not_allowed',
    `This API key may not use the model ${JSON.stringify(model ?? null)}; it may use ${models.join(', ')}.`,
  );
}

function assertAllowed(model: unknown, models: readonly string[]): void {
  if (typeof model !== 'string' || !models.includes(model)) throw modelNotAllowed(model, models);
}

/** Every field the platform may read as the model must name an allowed one, and at least one must. */
function assertModelsAllowed(raw: Buffer, shape: JsonShape, fields: readonly string[], models: readonly string[]) {
  if (shape.kind === 'broken') {
    throw new HttpError(
      400,
      'invalid_json',
      `The request body is not valid JSON, so the model this API key is limited to (${models.join(', ')}) cannot be checked.`,
    );
  }
  const named = shape.kind === 'object' ? shape.members.filter((member) => fields.includes(member.name)) : [];
  if (named.length === 0) {
    throw new ForbiddenError(
      'model_not_allowed',
      `This API key may only use the models ${models.join(', ')}: name one in the JSON body's "model" field.`,
    );
  }
  for (const member of named) assertAllowed(valueOf(raw, member), models);
}

/** One small member value, parsed; undefined when it is too long or not JSON. */
function valueOf(raw: Buffer, member: JsonMember): unknown {
  if (member.valueEnd - member.valueStart > MAX_FIELD_BYTES) return undefined;
  try {
    return JSON.parse(raw.toString('utf8', member.valueStart, member.valueEnd)) as unknown;
  } catch {
    return undefined;
  }
}

function streams(value: unknown): boolean {
  if (value === null || typeof value === 'boolean') return value === true;
  if (typeof value === 'number') return value !== 0;
  if (typeof value === 'string') {
    const spelt = value.trim().toLowerCase();
    if (STREAM_ON.has(spelt)) return true;
    if (STREAM_OFF.has(spelt)) return false;
  }
  throw new HttpError(400, 'invalid_stream', `"stream" must be true or false, not ${JSON.stringify(value) ?? 'that'}.`);
}

/**
 * The body with `stream_options.include_usage: true` when any `stream` member asks for a stream,
 * so the platform reports the tokens a limit charges. Edited in place, byte for byte elsewhere:
 * every `stream_options` member gets the last one's options plus the flag (parsers keep the last
 * of duplicated names), or one is added first when there is none.
 */
function withUsageTap(raw: Buffer, outline: JsonOutline, plan: ExchangePlan): Buffer {
  const streamed = outline.members
    .filter((member) => member.name === 'stream')
    .map((member) => streams(valueOf(raw, member)));
  if (!streamed.includes(true)) return raw;
  const options = outline.members.filter((member) => member.name === 'stream_options');
  const last = options.at(-1);
  const current = last && valueOf(raw, last);
  if (last && current === undefined) {
    throw new HttpError(400, 'invalid_stream_options', '"stream_options" must be a JSON object.');
  }
  const asked = typeof current === 'object' && current !== null && !Array.isArray(current) ? current : {};
  // The client asked for the usage chunk itself, so it keeps it.
  if ((asked as { include_usage?: unknown }).include_usage === true) return raw;
  plan.stripUsageChunk = true;
  const replacement = JSON.stringify({ ...asked, include_usage: true });
  if (!last) {
    const member = Buffer.from(`"stream_options":${replacement},`);
    return Buffer.concat([raw.subarray(0, outline.bodyStart), member, raw.subarray(outline.bodyStart)]);
  }
  const parts: Buffer[] = [];
  let from = 0;
  for (const member of options) {
    parts.push(raw.subarray(from, member.valueStart), Buffer.from(replacement));
    from = member.valueEnd;
  }
  parts.push(raw.subarray(from));
  return Buffer.concat(parts);
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
      : await readBody(body, { bytes: MAX_MODELS_LIST_BYTES }).catch((error: unknown) => {
          throw new HttpError(502, 'upstream_models_too_large', 'The model list is too large to filter.', {
            cause: error,
          });
        });
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
    return through(body, sseUsageTap(plan.stripUsageChunk, plan.onUsage, plan.meter));
  }
  if (isJson(contentType)) watchJsonUsage(body, plan.onUsage);
  return body;
}

/**
 * Feeds the platform's stream through a tap. Unlike a bare `pump` or `pipe`, failure on either side destroys
 * the other: an aborted platform request (client gone, user disabled) ends the client's stream, and
 * a client that leaves stops the platform's. Not `pipeline`, which keeps two sets of end-of-stream
 * watchers per stream: with a thousand streams open that is megabytes. `on` rather than `once` for
 * events emitted once, for the same reason: `once` wraps each listener in two more objects.
 */
function through(body: Readable, tap: Transform): Transform {
  let cut = false;
  const stop = pump(body, tap);
  body.on('error', (error) => {
    if (!cut) tap.destroy(error);
  });
  tap.on('close', () => body.destroy());
  // A stream cut for its budget: the platform's answer is dropped (undici then reports an abort,
  // not a failure) and the client's ends after the final event.
  tap.on('cut', () => {
    cut = true;
    stop();
    body.destroy();
    tap.end();
  });
  return tap;
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
