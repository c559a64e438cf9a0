import type { AuditedRequest, AuditLog } from '../audit/log.js';
import { HttpError } from '../errors.js';
import type { Identity } from '../identity/identify.js';
import type { Logger } from '../log.js';
import type { MetricsSink } from '../metrics/sink.js';
import { describeUpstreamFailure } from './upstream-failure.js';
import { unavailableDependency } from './dependency-errors.js';

/** Statuses that mean "someone was turned away", recorded in the audit log by class. */
const DENIAL_STATUSES = new Set([401, 403, 429]);

export interface FailedRequest extends AuditedRequest {
  readonly id: string;
  readonly url: string;
  readonly identity?: Identity;
  readonly log: Pick<Logger, 'info' | 'warn' | 'error'>;
}

/**
 * Turns whatever a request failed with into the error its caller is told, for the gateway's own
 * routes and the platform's alike. Refusals are audited; what the caller must not see (a stack, the
 * platform's address) goes to the log only.
 */
export function createFailureAnswer(audit: AuditLog, metrics: MetricsSink) {
  return function answerFailure(error: unknown, request: FailedRequest): HttpError {
    if (error instanceof HttpError) {
      if (DENIAL_STATUSES.has(error.status)) {
        audit.record(request, {
          event: 'request_denied',
          actor: request.identity?.user,
          target: request.url.split('?')[0]?.slice(0, 256),
          detail: { reason: error.code, status: error.status },
        });
      }
      return error;
    }
    const status = (error as { statusCode?: number }).statusCode;
    if (status && status < 500) {
      const { code = 'bad_request', message } = error as { code?: string; message: string };
      return new HttpError(status, code, message);
    }
    if (String((error as { code?: string }).code).startsWith('UND_ERR_')) return describeUpstreamFailure(error);
    const dependency = unavailableDependency(error);
    if (dependency) {
      metrics.dependencyErrors.inc({ dependency });
      request.log.warn({ err: error, dependency }, 'request refused: dependency unavailable');
      return new HttpError(
        503,
        `${dependency}_unavailable`,
        `The gateway's ${dependency} is unavailable, so the request was refused. Retry shortly.`,
        { headers: { 'retry-after': '2' } },
      );
    }
    request.log.error({ err: error }, 'request failed');
    return new HttpError(
      500,
      'internal_error',
      `Gatehouse could not complete this request (request id ${request.id}).`,
    );
  };
}

export type FailureAnswer = ReturnType<typeof createFailureAnswer>;
