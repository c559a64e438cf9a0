/**
 * The sample OpenAI-compatible platform: a tiny stand-in for the LLM server behind the gateway,
 * so `gatehouse demo` shows answers and tests can observe exactly what the gateway forwarded.
 *
 * It answers `/v1/models`, `/v1/completions` and `/v1/chat/completions` (echoing the prompt, as
 * JSON or as server-sent events), Ollama's native `/api/chat`, `/api/generate`, `/api/embed` and
 * `/api/tags` (streams as newline-delimited JSON, Ollama's default), echoes any request under
 * `/echo/`, and streams on demand from `/slow-stream`. Streams write each event separately and stop
 * the moment the client leaves.
 * https://platform.openai.com/docs/api-reference/chat
 * https://github.com/ollama/ollama/blob/main/docs/api.md
 */
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { GatehouseError, HttpError } from '../errors.js';

export interface RecordedRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  /** The body as text; empty when there was none. */
  body: string;
}

export interface SamplePlatform {
  /** `http://127.0.0.1:PORT`, without a trailing slash. */
  url: string;
  /** Every request received, oldest first (empty when `record` is false). */
  requests: RecordedRequest[];
  /** Streams still writing. */
  activeStreams(): number;
  /** Streams whose client went away before the last event. */
  abortedStreams(): number;
  close(): Promise<void>;
}

export interface SamplePlatformOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Pause between two streamed events; default 50 ms. */
  chunkDelayMs?: number;
  /** Keep every request in `requests`; default true. */
  record?: boolean;
}

const MODELS = ['demo-small', 'demo-large'];
/** A fixed creation time keeps `/v1/models` byte-identical between runs. */
const MODELS_CREATED = 1_700_000_000;
const MAX_STREAM_CHUNKS = 10_000;
const MAX_STREAM_DELAY_MS = 60_000;

interface StreamCounters {
  active: number;
  aborted: number;
}

/** Starts the platform and resolves once it accepts connections. */
export async function startSamplePlatform(options: SamplePlatformOptions = {}): Promise<SamplePlatform> {
  const chunkDelayMs = options.chunkDelayMs ?? 50;
  const requests: RecordedRequest[] = [];
  const streams: StreamCounters = { active: 0, aborted: 0 };
  const stream: Streamer = (reply, events, delayMs = chunkDelayMs, framing = SERVER_SENT_EVENTS) =>
    streamEvents(reply, events, delayMs, streams, framing);
  const app = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024, forceCloseConnections: true });

  // Bodies stay text whatever their type: recorded and echoed verbatim, and bad JSON is answered
  // in OpenAI's error shape by the routes rather than in Fastify's.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => done(null, body));

  if (options.record ?? true) {
    app.addHook('preHandler', async (request) => {
      requests.push({
        method: request.method,
        url: request.url,
        headers: { ...request.headers },
        body: readBody(request),
      });
    });
  }

  app.setErrorHandler((error: { statusCode?: number; message: string }, _request, reply) => {
    const status = error instanceof HttpError ? error.status : (error.statusCode ?? 500);
    const type = status >= 500 ? 'server_error' : 'invalid_request_error';
    return reply.code(status).send(describeError(error.message, type));
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send(describeError(`No route for ${request.method} ${request.url}.`)),
  );

  app.get('/v1/models', async () => ({
    object: 'list',
    data: MODELS.map((id) => ({ id, object: 'model', created: MODELS_CREATED, owned_by: 'gatehouse-demo' })),
  }));

  app.post('/v1/chat/completions', async (request, reply) => {
    const body = parseJsonObject(request);
    if (!Array.isArray(body.messages)) throw invalidRequest("'messages' must be an array of messages.");
    const question = readLastUserText(body.messages);
    return answer(
      reply,
      { body, flavour: 'chat', text: `You said: ${question || '(nothing)'}`, prompt: question },
      stream,
    );
  });

  app.post('/v1/completions', async (request, reply) => {
    const body = parseJsonObject(request);
    const prompt = Array.isArray(body.prompt) ? body.prompt.join('\n') : String(body.prompt ?? '');
    return answer(reply, { body, flavour: 'text', text: `Echo: ${prompt || '(empty prompt)'}`, prompt }, stream);
  });

  app.get('/api/tags', async () => ({
    models: MODELS.map((name) => ({ name, model: name, modified_at: new Date(MODELS_CREATED * 1000).toISOString() })),
  }));

  app.post('/api/chat', async (request, reply) => {
    const body = parseJsonObject(request);
    if (!Array.isArray(body.messages)) throw invalidRequest("'messages' must be an array of messages.");
    const question = readLastUserText(body.messages);
    const text = `You said: ${question || '(nothing)'}`;
    return answerOllama(
      reply,
      body,
      text,
      question,
      (piece) => ({ message: { role: 'assistant', content: piece } }),
      stream,
    );
  });

  app.post('/api/generate', async (request, reply) => {
    const body = parseJsonObject(request);
    const prompt = String(body.prompt ?? '');
    return answerOllama(
      reply,
      body,
      `Echo: ${prompt || '(empty prompt)'}`,
      prompt,
      (piece) => ({ response: piece }),
      stream,
    );
  });

  app.post('/api/embed', async (request) => {
    const body = parseJsonObject(request);
    const inputs = Array.isArray(body.input) ? body.input.map(String) : [String(body.input ?? '')];
    // A fixed-size vector per input, derived from its length: enough to tell inputs apart.
    return { model: body.model, embeddings: inputs.map((input) => [input.length, countWords(input), 1]) };
  });

  app.all('/echo/*', async (request) => ({
    method: request.method,
    url: request.url,
    headers: request.headers,
    body: readBody(request),
  }));

  app.get('/slow-stream', async (request, reply) => {
    const query = request.query as Record<string, string | undefined>;
    const chunks = clamp(Number(query.chunks ?? 5), 1, MAX_STREAM_CHUNKS);
    const delayMs = clamp(Number(query.delayMs ?? chunkDelayMs), 0, MAX_STREAM_DELAY_MS);
    const events = Array.from({ length: chunks }, (_, index) => () => JSON.stringify({ index, sent_at: Date.now() }));
    await stream(reply, events, delayMs);
  });

  const url = await app
    .listen({ port: options.port ?? 0, host: options.host ?? '127.0.0.1' })
    .catch((cause: unknown) => {
      throw new GatehouseError('DEMO_LISTEN_FAILED', `sample platform cannot listen on port ${options.port ?? 0}`, {
        cause,
      });
    });

  return {
    url,
    requests,
    activeStreams: () => streams.active,
    abortedStreams: () => streams.aborted,
    close: () => app.close(),
  };
}

type Streamer = (
  reply: FastifyReply,
  events: (() => string)[],
  delayMs?: number,
  framing?: StreamFraming,
) => Promise<void>;

/** How a stream's events go on the wire. */
interface StreamFraming {
  contentType: string;
  frame(event: string): string;
  /** Written after the last event. */
  end: string;
}

/** OpenAI streams server-sent events, ending with `[DONE]`. */
const SERVER_SENT_EVENTS: StreamFraming = {
  contentType: 'text/event-stream; charset=utf-8',
  frame: (event) => `data: ${event}\n\n`,
  end: 'data: [DONE]\n\n',
};

/** Ollama streams one JSON object per line; the last has `done: true`. */
const NEWLINE_DELIMITED_JSON: StreamFraming = {
  contentType: 'application/x-ndjson',
  frame: (event) => `${event}\n`,
  end: '',
};

interface Completion {
  body: Record<string, unknown>;
  /** `chat` for /v1/chat/completions, `text` for /v1/completions. */
  flavour: 'chat' | 'text';
  /** The whole answer; streamed one word per event. */
  text: string;
  /** What the caller asked, for the usage counts. */
  prompt: string;
}

/** Replies with one completion object, or with one event per word when `stream` is true. */
async function answer(reply: FastifyReply, completion: Completion, stream: Streamer): Promise<FastifyReply> {
  const { body, flavour, text, prompt } = completion;
  const model = typeof body.model === 'string' ? body.model : (MODELS[0] ?? '');
  const id = `${flavour === 'chat' ? 'chatcmpl' : 'cmpl'}-${Date.now().toString(36)}`;
  const created = Math.floor(Date.now() / 1000);
  const words = text.split(/\s+/).filter(Boolean);
  const usage = {
    prompt_tokens: countWords(prompt),
    completion_tokens: words.length,
    total_tokens: countWords(prompt) + words.length,
  };
  const object = flavour === 'chat' ? 'chat.completion' : 'text_completion';

  if (body.stream !== true) {
    const choice =
      flavour === 'chat'
        ? { index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }
        : { index: 0, text, logprobs: null, finish_reason: 'stop' };
    return reply.send({ id, object, created, model, choices: [choice], usage });
  }

  const streamOptions = body.stream_options as { include_usage?: unknown } | undefined;
  const includeUsage = streamOptions?.include_usage === true;
  const chunkObject = flavour === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  // With `include_usage`, every chunk carries `usage: null` and one last chunk without choices
  // carries the totals, as OpenAI does.
  const frame = (choices: unknown[], totals: typeof usage | null) => () =>
    JSON.stringify({ id, object: chunkObject, created, model, choices, ...(includeUsage ? { usage: totals } : {}) });
  const events = words.map((word, index) => {
    const piece = index === 0 ? word : ` ${word}`;
    const finish_reason = index === words.length - 1 ? 'stop' : null;
    const choice =
      flavour === 'chat'
        ? { index: 0, delta: index === 0 ? { role: 'assistant', content: piece } : { content: piece }, finish_reason }
        : { index: 0, text: piece, logprobs: null, finish_reason };
    return frame([choice], null);
  });
  if (includeUsage) events.push(frame([], usage));
  await stream(reply, events);
  return reply;
}

/**
 * Replies as Ollama does: one object per word as newline-delimited JSON, unless `stream` is false
 * (Ollama streams by default), and a last object with `done: true` and the token counts.
 */
async function answerOllama(
  reply: FastifyReply,
  body: Record<string, unknown>,
  text: string,
  prompt: string,
  piece: (text: string) => Record<string, unknown>,
  stream: Streamer,
): Promise<FastifyReply> {
  const model = typeof body.model === 'string' ? body.model : (MODELS[0] ?? '');
  const created_at = new Date().toISOString();
  const words = text.split(/\s+/).filter(Boolean);
  const counts = { prompt_eval_count: countWords(prompt), eval_count: words.length };
  if (body.stream === false) return reply.send({ model, created_at, ...piece(text), done: true, ...counts });
  const events = words.map(
    (word, index) => () =>
      JSON.stringify({ model, created_at, ...piece(index === 0 ? word : ` ${word}`), done: false }),
  );
  events.push(() => JSON.stringify({ model, created_at, ...piece(''), done: true, done_reason: 'stop', ...counts }));
  await stream(reply, events, undefined, NEWLINE_DELIMITED_JSON);
  return reply;
}

/**
 * Writes each event as its own frame (`data:` by default) with `delayMs` between frames, then the end
 * (`data: [DONE]`).
 * Events are built lazily, so nothing is produced after the client has gone; that is when the
 * stream counts as aborted.
 * https://html.spec.whatwg.org/multipage/server-sent-events.html
 */
async function streamEvents(
  reply: FastifyReply,
  events: (() => string)[],
  delayMs: number,
  streams: StreamCounters,
  framing: StreamFraming,
): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  const gone = new AbortController();
  res.on('close', () => {
    if (!res.writableEnded) gone.abort();
  });
  res.writeHead(200, {
    'content-type': framing.contentType,
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  streams.active += 1;
  try {
    for (const [index, event] of events.entries()) {
      if (index > 0) await sleep(delayMs, undefined, { signal: gone.signal });
      gone.signal.throwIfAborted();
      res.write(framing.frame(event()));
    }
    res.end(framing.end);
  } catch (error) {
    if (!gone.signal.aborted) throw error;
  } finally {
    streams.active -= 1;
    if (gone.signal.aborted) streams.aborted += 1;
  }
}

function parseJsonObject(request: FastifyRequest): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readBody(request));
  } catch {
    throw invalidRequest('We could not parse the JSON body of your request. Send a JSON object.');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidRequest('The request body must be a JSON object.');
  }
  return value as Record<string, unknown>;
}

/** The text of the last user message; content may be a string or an array of text parts. */
function readLastUserText(messages: unknown[]): string {
  const last = messages.findLast((message) => (message as { role?: unknown })?.role === 'user') as
    { content?: unknown } | undefined;
  if (typeof last?.content === 'string') return last.content;
  if (!Array.isArray(last?.content)) return '';
  return (last.content as { type?: unknown; text?: unknown }[])
    .filter((part) => part?.type === 'text')
    .map((part) => String(part.text ?? ''))
    .join(' ');
}

function readBody(request: FastifyRequest): string {
  return typeof request.body === 'string' ? request.body : '';
}

function invalidRequest(message: string): HttpError {
  return new HttpError(400, 'PLATFORM_INVALID_REQUEST', message);
}

/** OpenAI's error envelope, which SDKs and the gateway's error pages expect. */
function describeError(message: string, type = 'invalid_request_error') {
  return { error: { message, type, code: null } };
}

function countWords(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}

function clamp(value: number, min: number, max: number): number {
  return Number.isFinite(value) ? Math.min(Math.max(Math.trunc(value), min), max) : min;
}
