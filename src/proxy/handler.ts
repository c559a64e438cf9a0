import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { parseCookie } from 'cookie';
import { AuthError, HttpError } from '../errors.js';
import type { ClientAddressing } from '../http/client.js';
import type { LogAccess } from '../http/access-log.js';
import { writeApiError } from '../http/errors.js';
import type { FailureAnswer } from '../http/failure.js';
import { requestIdFor } from '../http/request-id.js';
import { challengeFor } from '../http/challenge.js';
import type { CallerRequest, Identity } from '../identity/identify.js';
import type { Logger } from '../log.js';
import type { Decide } from '../policy/decide.js';
import type { TokenUsage } from '../usage/extract.js';
import type { ExchangePlan } from './exchange.js';
import type { PlatformControls } from './platform-controls.js';
import type { Forwarder, RequestContext } from './forward.js';

export interface PlatformHandlerOptions {
  forwarder: Forwarder;
  /** Absent when auth is disabled: everything is forwarded without sign-in. */
  gate?: {
    decide: Decide;
    website: string;
    controls: PlatformControls;
  };
  client: ClientAddressing;
  answerFailure: FailureAnswer;
  log: Logger;
  /** True once the gateway is shutting down: new requests are turned away. */
  isClosing: () => boolean;
  /** Sees each request once its response is over; only set when someone reads the figures. */
  onFinished?: (status: number, auth: string) => void;
  /** Writes the access log line of each request; absent with `gateway.access_log: false`. */
  logAccess?: LogAccess;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const ALLOWED = [...METHODS].join(', ');

/** One request for the platform, as identification, the audit and the error answer read it. */
class PlatformRequest implements CallerRequest {
  identity?: Identity;
  /** The decision's answer headers (limits, an expiry warning): a refusal before the plan carries them. */
  allowedHeaders?: Record<string, string>;
  plan?: ExchangePlan;
  readonly tokens: TokenUsage = { prompt_tokens: 0, completion_tokens: 0 };
  readonly startedAt = performance.now();
  private parsedCookies?: Record<string, string | undefined>;
  private requestLog?: Logger;

  constructor(
    readonly raw: IncomingMessage,
    readonly id: string,
    readonly ip: string,
    private readonly gatewayLog: Logger,
  ) {}

  get method(): string {
    return this.raw.method ?? 'GET';
  }

  get url(): string {
    return this.raw.url ?? '';
  }

  get headers(): IncomingMessage['headers'] {
    return this.raw.headers;
  }

  get cookies(): Record<string, string | undefined> {
    return (this.parsedCookies ??= parseCookie(this.raw.headers.cookie ?? ''));
  }

  /** A child logger costs an allocation, so it is made only when there is something to log. */
  get log(): Logger {
    return (this.requestLog ??= this.gatewayLog.child({ reqId: this.id }));
  }
}

/**
 * Every path the gateway does not own belongs to the platform: identify the caller, authorize,
 * forward. These requests are served on Node's own request and response, without the web framework
 * the gateway's pages use: on the path every API call takes, that framework cost more CPU than
 * everything else together. The body is left unread so it streams straight upstream.
 */
export function createPlatformHandler(options: PlatformHandlerOptions): RequestListener {
  const { forwarder, gate, client, answerFailure, log, isClosing, onFinished, logAccess } = options;
  const website = gate ? new URL(gate.website) : undefined;
  const publicProto = website?.protocol.slice(0, -1);

  async function admit(request: PlatformRequest, response: ServerResponse): Promise<void> {
    const { raw } = request;
    const context: RequestContext = {
      clientAddress: request.ip,
      publicProto: publicProto ?? client.protocol(raw),
      publicHost: website ? website.host : (raw.headers.host ?? ''),
      requestId: request.id,
    };
    if (!gate) return forwarder(raw, response, context);

    const decision = await gate.decide({
      credentials: request,
      method: request.method,
      target: request.url,
      need: 'platform',
    });
    if (decision.outcome === 'challenge') return writeChallenge(request, response);
    if (decision.outcome === 'deny') throw decision.error;
    const { identity } = decision;
    if (!identity) return forwarder(raw, response, context);
    request.allowedHeaders = decision.headers;
    context.plan = request.plan = await gate.controls(raw, response, identity, decision, request.tokens);
    context.userId = identity.user.id;
    context.identity = decision.forwarded;
    return forwarder(raw, response, context);
  }

  function fail(error: unknown, request: PlatformRequest, response: ServerResponse): void {
    if (response.headersSent) {
      request.log.warn({ err: error }, 'platform request failed after its answer began');
      response.destroy();
      return;
    }
    const answer = answerFailure(error, request);
    setRequestId(request, response);
    // The plan's headers include the decision's, and add the budget's once it admitted the request.
    const gatewayHeaders = request.plan?.answerHeaders ?? request.allowedHeaders;
    if (gatewayHeaders) for (const name in gatewayHeaders) response.setHeader(name, gatewayHeaders[name]!);
    writeApiError(response, answer.status, answer.code, answer.message, answer.headers);
  }

  return (raw, response) => {
    if (isClosing()) {
      writeApiError(response, 503, 'shutting_down', 'This Gatehouse instance is shutting down; retry shortly.', {
        connection: 'close',
        'retry-after': '1',
      });
      return;
    }
    const request = new PlatformRequest(raw, requestIdFor(raw.headers), client.ip(raw), log);
    if (onFinished || logAccess) {
      response.on('close', () => {
        onFinished?.(response.statusCode, request.identity?.method ?? 'none');
        if (logAccess) logPlatformAccess(logAccess, request, response);
      });
    }
    if (!METHODS.has(request.method)) {
      const refusal = new HttpError(405, 'method_not_allowed', `${request.method} is not supported; use ${ALLOWED}.`, {
        headers: { allow: ALLOWED },
      });
      fail(refusal, request, response);
      return;
    }
    admit(request, response).catch((error: unknown) => fail(error, request, response));
  };
}

/**
 * Every answer carries the request id, refusals included, so a client can quote it when asking why.
 * The forwarder puts it among the platform's headers; the gateway's own answers get it here.
 */
function setRequestId(request: PlatformRequest, response: ServerResponse): void {
  response.setHeader('x-request-id', request.id);
}

function writeChallenge(request: PlatformRequest, response: ServerResponse): void {
  setRequestId(request, response);
  const challenge = challengeFor(request);
  if (challenge instanceof AuthError) {
    writeApiError(response, challenge.status, challenge.code, challenge.message, challenge.headers);
    return;
  }
  response.writeHead(302, { location: challenge.signInAt, 'content-length': 0 }).end();
}

function logPlatformAccess(logAccess: LogAccess, request: PlatformRequest, response: ServerResponse): void {
  const { tokens } = request;
  logAccess({
    method: request.method,
    url: request.url,
    // A client that left before the answer ended is logged as nginx does it.
    status: response.writableFinished ? response.statusCode : 499,
    durationMs: performance.now() - request.startedAt,
    requestId: request.id,
    clientAddress: request.ip,
    identity: request.identity,
    model: request.plan?.model,
    tokens: tokens.prompt_tokens + tokens.completion_tokens > 0 ? tokens : undefined,
  });
}
