import type { FastifyReply, FastifyRequest } from 'fastify';
import { Agent, request as undiciRequest } from 'undici';
import { HttpError, UpstreamError } from '../errors.js';
import { buildClientHeaders, buildUpstreamHeaders, type ForwardContext } from './headers.js';

export interface ForwarderOptions {
  upstream: string;
  upstreamApiKey?: string;
  gatewayCookies: readonly string[];
}

/**
 * Generations can take minutes before the first byte and pause between tokens; these bound a hung
 * platform, not a slow one.
 */
const HEADERS_TIMEOUT_MS = 10 * 60_000;
const BODY_IDLE_TIMEOUT_MS = 5 * 60_000;

export type Forwarder = ((
  request: FastifyRequest,
  reply: FastifyReply,
  context: Omit<ForwardContext, 'upstreamApiKey' | 'gatewayCookies'>,
) => Promise<void>) & { close(): Promise<void> };

/**
 * Streams a request to the platform and its answer back, both ways without buffering, over a pooled
 * keep-alive connection. When the client goes away the upstream request is aborted, so a reader who
 * stops also stops the GPU work behind it.
 */
export function createForwarder(options: ForwarderOptions): Forwarder {
  const base = new URL(options.upstream);
  const basePath = base.pathname.replace(/\/$/, '');
  const agent = new Agent({
    keepAliveTimeout: 30_000,
    headersTimeout: HEADERS_TIMEOUT_MS,
    bodyTimeout: BODY_IDLE_TIMEOUT_MS,
  });

  const forward = async (
    request: FastifyRequest,
    reply: FastifyReply,
    context: Omit<ForwardContext, 'upstreamApiKey' | 'gatewayCookies'>,
  ): Promise<void> => {
    const aborter = new AbortController();
    const abortIfUnfinished = () => {
      if (!reply.raw.writableFinished) aborter.abort();
    };
    reply.raw.once('close', abortIfUnfinished);
    const hasBody = request.raw.headers['content-length'] !== undefined || request.raw.headers['transfer-encoding'] !== undefined;
    let upstream;
    try {
      upstream = await undiciRequest(new URL(basePath + request.raw.url, base.origin), {
        dispatcher: agent,
        method: request.raw.method as 'GET',
        headers: buildUpstreamHeaders(request.raw.headers, {
          ...context,
          upstreamApiKey: options.upstreamApiKey,
          gatewayCookies: options.gatewayCookies,
        }),
        body: hasBody ? request.raw : undefined,
        signal: aborter.signal,
      });
    } catch (error) {
      if (aborter.signal.aborted) return;
      throw describeUpstreamFailure(options.upstream, error);
    }
    reply.code(upstream.statusCode).headers(buildClientHeaders(upstream.headers));
    if (request.raw.method === 'HEAD') {
      upstream.body.resume();
      return reply.send();
    }
    return reply.send(upstream.body);
  };
  return Object.assign(forward, { close: () => agent.close() });
}

function describeUpstreamFailure(upstream: string, error: unknown): HttpError {
  const code = (error as { code?: string }).code;
  if (code === 'UND_ERR_HEADERS_TIMEOUT') {
    return new HttpError(504, 'UPSTREAM_TIMEOUT', `the platform at ${upstream} did not answer in time`, { cause: error });
  }
  return new UpstreamError(`the platform at ${upstream} is not reachable (${code ?? (error as Error).message})`, {
    cause: error,
  });
}
