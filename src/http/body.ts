import type { Readable } from 'node:stream';
import { HttpError } from '../errors.js';

export interface BodyLimit {
  bytes: number;
  /** Where the limit comes from, for the refusal ("gateway.max_checked_body_mb"), if an operator sets it. */
  setting?: string;
}

function bodyTooLarge(limit: BodyLimit): HttpError {
  const where = limit.setting ? ` (${limit.setting})` : '';
  return new HttpError(
    413,
    'request_too_large',
    `This request body is larger than the ${limit.bytes} bytes allowed${where}.`,
  );
}

/**
 * A body refused before its end is not worth reading to its end, which a kept-alive connection
 * would need: the refusal closes the connection instead.
 */
function closingConnection(error: HttpError): HttpError {
  return new HttpError(error.status, error.code, error.message, {
    cause: error.cause,
    headers: { ...error.headers, connection: 'close' },
  });
}

/**
 * Reads a whole request body, refusing it once it passes the limit (at once when its declared length
 * does). `inspect` sees each chunk as it arrives and may refuse the body by throwing, so work on it
 * is spread over the upload instead of done in one block at the end. A refusal closes the connection
 * once answered; until then the rest is read and dropped. Plain listeners rather than `for await`: an async iterator costs several promises
 * per request on the proxy's hot path.
 */
export function readBody(
  stream: Readable & { headers?: Record<string, string | string[] | undefined> },
  limit: BodyLimit,
  inspect?: (chunk: Buffer) => void,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit.bytes) return refuse(bodyTooLarge(limit));
      try {
        inspect?.(chunk);
      } catch (error) {
        return refuse(error);
      }
      parts.push(chunk);
    };
    // Detached once done: the request outlives its body (a stream answer can take minutes), and the
    // listeners would keep the chunks and whatever `inspect` holds alive with it.
    const onEnd = () => {
      stream.off('data', onData);
      stream.off('error', reject);
      resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size));
    };
    const refuse = (error: unknown) => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.resume();
      reject(error instanceof HttpError ? closingConnection(error) : error);
    };
    if (Number(stream.headers?.['content-length'] ?? 0) > limit.bytes) return refuse(bodyTooLarge(limit));
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.on('error', reject);
  });
}
