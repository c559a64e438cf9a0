import pino, { type Logger } from 'pino';

/**
 * Every path where a credential could surface in a log line is censored, so a secret never reaches
 * log storage even when a request or error object is logged whole.
 */
const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]',
  '*.client_secret',
  '*.upstream_api_key',
  '*.key_hash_secret',
  '*.test_token',
  '*.id_token',
  '*.access_token',
  '*.refresh_token',
  '*.code_verifier',
  '*.key',
];

export type { Logger };

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    { level, redact: { paths: REDACTED_PATHS, censor: '[redacted]' }, base: { service: 'gatehouse' } },
    destination,
  );
}
