import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { Agent } from 'undici';
import { HttpError } from '../errors.js';
import { describeUpstreamFailure } from '../http/upstream-failure.js';
import type { Logger } from '../log.js';
import {
  buildClientHeaders,
  buildUpstreamHeaders,
  compileHeaderRules,
  type ForwardContext,
  type GatewayHeaderRules,
} from './headers.js';
import { applyPlan, type ExchangePlan } from './exchange.js';
import { UpstreamCancel, type InFlightRequests } from './in-flight.js';
import { pump } from './pump.js';
import type { AnsweredRequest } from '../metrics/sink.js';

export interface ForwarderOptions extends GatewayHeaderRules {
  upstream: string;
  inFlight: InFlightRequests;
  headersTimeoutMs: number;
  idleTimeoutMs: number;
  /** Failures are logged with the request id; a child logger per request would cost more than the request. */
  log: Logger;
  /** Seconds until the platform's response headers, for the latency histogram. */
  onUpstreamHeaders?: (seconds: number) => void;
  /** Each request once its answer ended or the client left, for the duration histograms. */
  onAnswered?: (answer: AnsweredRequest) => void;
}

export type RequestContext = ForwardContext & {
  /** Whose request this is, so disabling them can cut it. */
  userId?: string;
  /** What the gateway does to the exchange beyond passing it through; see exchange.ts. */
  plan?: ExchangePlan;
};

type Forward = (request: IncomingMessage, response: ServerResponse, context: RequestContext) => Promise<void>;

export type Forwarder = Forward & { close(): Promise<void> };

/**
 * Streams a request to the platform and its answer back, both ways without buffering, over a pooled
 * keep-alive connection. When the client goes away the upstream request is aborted, so a reader who
 * stops also stops the GPU work behind it.
 */
export function createForwarder(options: ForwarderOptions): Forwarder {
  const { log } = options;
  const headerPolicy = compileHeaderRules(options);
  const base = new URL(options.upstream);
  const basePath = base.pathname.replace(/\/$/, '');
  const agent = new Agent({
    keepAliveTimeout: 30_000,
    // Generations can take minutes before the first byte and pause between tokens: these bound a
    // hung platform, not a slow one, and a stream that keeps sending never times out.
    headersTimeout: options.headersTimeoutMs,
    bodyTimeout: options.idleTimeoutMs,
  });

  const forward: Forward = async (request, response, context) => {
    const cancel = new UpstreamCancel();
    const untrack = context.userId ? options.inFlight.track(context.userId, cancel) : undefined;
    const begun = performance.now();
    let firstByteAt: number | undefined;
    // Emitted once: `on` spares the two objects `once` wraps a listener in, held as long as a stream is open.
    response.on('close', () => {
      untrack?.();
      if (!response.writableFinished) cancel.abort();
      const now = performance.now();
      options.onAnswered?.({
        model: context.plan?.model,
        status: response.statusCode,
        seconds: (now - begun) / 1000,
        firstByteSeconds: firstByteAt === undefined ? undefined : (firstByteAt - begun) / 1000,
      });
    });
    const target = request.url ?? '';
    // Only an origin-form target (RFC 9112 3.2.1) is a path; `//host/x` or `http://host/x` must never
    // choose the upstream host, so the path is passed on verbatim, dot segments included.
    if (!target.startsWith('/')) {
      throw new HttpError(400, 'invalid_request_target', 'The request target must be a path starting with /.');
    }
    const plan = context.plan;
    const hasBody =
      request.headers['content-length'] !== undefined || request.headers['transfer-encoding'] !== undefined;
    const headers = buildUpstreamHeaders(request.headers, context, headerPolicy);
    if (plan?.body) {
      delete headers['transfer-encoding'];
      headers['content-length'] = String(plan.body.length);
    }
    let upstream;
    const started = performance.now();
    try {
      upstream = await agent.request({
        origin: base.origin,
        path: basePath + target,
        method: request.method as 'GET',
        headers,
        body: plan?.body ?? (hasBody ? request : undefined),
        signal: cancel,
      });
    } catch (error) {
      if (cancel.aborted) return answerCancelled(cancel);
      log.warn({ reqId: context.requestId, err: error, upstream: options.upstream }, 'platform request failed');
      throw describeUpstreamFailure(error);
    }
    options.onUpstreamHeaders?.((performance.now() - started) / 1000);
    const clientHeaders = buildClientHeaders(upstream.headers, context.requestId);
    // The gateway's own (limits, budget) override any the platform sent under the same names.
    if (plan?.answerHeaders) Object.assign(clientHeaders, plan.answerHeaders);
    if (request.method === 'HEAD') {
      upstream.body.resume();
      response.writeHead(upstream.statusCode, clientHeaders).end();
      return;
    }
    let body: Readable | Buffer = upstream.body;
    if (arrivesWhole(upstream.headers)) {
      try {
        body = Buffer.from(await upstream.body.arrayBuffer());
      } catch (error) {
        if (cancel.aborted) return answerCancelled(cancel);
        log.warn({ reqId: context.requestId, err: error }, 'platform response broke off');
        throw describeUpstreamFailure(error);
      }
    } else {
      upstream.body.on('error', (error) => {
        if (!cancel.aborted) log.warn({ reqId: context.requestId, err: error }, 'platform response broke off');
      });
    }
    const answer = plan ? await applyPlan(plan, upstream.statusCode, clientHeaders, body) : body;
    if (Buffer.isBuffer(answer)) {
      clientHeaders['content-length'] = String(answer.length);
      response.writeHead(upstream.statusCode, clientHeaders).end(answer);
      return;
    }
    response.statusCode = upstream.statusCode;
    for (const name in clientHeaders) response.setHeader(name, clientHeaders[name]!);
    if (options.onAnswered && String(clientHeaders['content-type']).startsWith('text/event-stream')) {
      answer.once('data', () => (firstByteAt = performance.now()));
    }
    return relay(answer, response, cancel, clientHeaders);
  };
  return Object.assign(forward, { close: () => agent.close() });
}

/**
 * A platform request cancelled before its answer was sent on: a client that left needs no answer,
 * and one whose account was disabled meanwhile is told so instead of being left waiting.
 */
function answerCancelled(cancel: UpstreamCancel): void {
  if (cancel.reason) throw cancel.reason;
}

/**
 * Streams an answer to the client. Its headers leave with the first byte, so a platform that fails
 * before sending any (an idle timeout, a reset) is still answered with an error the client can read;
 * one that breaks off later cuts the client's connection, so a truncated answer is never mistaken
 * for a complete one. A client that leaves destroys the platform's stream.
 */
function relay(
  answer: Readable,
  response: ServerResponse,
  cancel: UpstreamCancel,
  platformHeaders: Record<string, unknown>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    answer.on('error', (error) => {
      if (response.headersSent || cancel.aborted) {
        response.destroy();
        resolve();
      } else {
        // The error answer must not carry the platform's content-type or encoding.
        for (const name in platformHeaders) response.removeHeader(name);
        reject(describeUpstreamFailure(error));
      }
    });
    response.on('close', () => {
      answer.destroy();
      resolve();
    });
    pump(answer, response);
  });
}

/**
 * A small answer of known length is read whole before it is sent: the client gets headers and body
 * in one write, a JSON answer is of no use in part anyway, and one the platform breaks off becomes a
 * 502 rather than a truncated 200. Anything else (event streams, answers without a length) passes
 * through chunk by chunk as the platform writes it.
 */
const WHOLE_BODY_MAX_BYTES = 64 * 1024;

function arrivesWhole(headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length'];
  return (
    length !== undefined &&
    Number(length) <= WHOLE_BODY_MAX_BYTES &&
    !String(headers['content-type'] ?? '').startsWith('text/event-stream')
  );
}
