import { HttpError, UpstreamError } from '../errors.js';

/** The platform's internal address stays in the log; the caller learns only what happened. */
export function describeUpstreamFailure(error: unknown): HttpError {
  const code = (error as { code?: string }).code;
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new HttpError(504, 'upstream_timeout', 'The platform did not answer in time.', { cause: error });
  }
  return new UpstreamError('The platform behind the gateway is not reachable; try again shortly.', { cause: error });
}
