/** Error codes of a database or cache that is down or overloaded, as opposed to a bug. */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  // PostgreSQL: admin shutdown, crash shutdown, cannot connect now, connection failures, query cancelled.
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08006',
  '57014',
  'SQLITE_BUSY',
  'SQLITE_LOCKED',
  'SQLITE_IOERR',
  'SQLITE_CANTOPEN',
  'SQLITE_FULL',
  'SQLITE_READONLY',
]);

const UNAVAILABLE_MESSAGES = [
  /Connection terminated/i,
  /timeout exceeded when trying to connect/i,
  /Client has encountered a connection error/i,
  /Stream isn't writeable/i,
  /Connection is closed/i,
  /MaxRetriesPerRequestError/i,
  /Reached the max retries per request limit/i,
];

/**
 * Which dependency a failure means is unavailable, if any. Such requests are answered 503 and never
 * let through: a lookup that could not be made is a refusal, not a pass.
 */
export function unavailableDependency(error: unknown): 'database' | 'redis' | undefined {
  for (let current = error; current instanceof Error; current = current.cause) {
    const code = (current as { code?: unknown }).code;
    const isRedis =
      current.constructor.name.includes('Redis') || /redis|Stream isn't writeable|max retries/i.test(current.message);
    if (
      (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) ||
      UNAVAILABLE_MESSAGES.some((m) => m.test(current.message))
    ) {
      return isRedis ? 'redis' : 'database';
    }
  }
  return undefined;
}
