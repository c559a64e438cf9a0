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
    destination ?? batchedStdout(),
  );
}

/**
 * Writes `info` lines whose members the caller has already serialised (`,"name":value...`) straight
 * to `log`'s destination, in pino's layout with its bindings: for the access log, whose few named
 * facts need none of pino's per-line work (walking and stringifying an object, serializers,
 * redaction), about a third of what a proxied request cost in Gatehouse's own code (bench/README.md).
 */
export function createInfoWriter(log: Logger): (members: string, msg: string) => void {
  const internals = log as unknown as Record<symbol, unknown>;
  const destination = internals[pino.symbols.streamSym] as pino.DestinationStream;
  const bindings = internals[pino.symbols.chindingsSym] as string;
  const level = log.levels.values.info;
  return (members, msg) => {
    if (!log.isLevelEnabled('info')) return;
    destination.write(`{"level":${level},"time":${Date.now()}${bindings}${members},"msg":${JSON.stringify(msg)}}\n`);
  };
}

/**
 * Up to this many bytes go out in one write: writes to a pipe no longer than PIPE_BUF (4 KiB on
 * Linux) are atomic, so the lines of several workers sharing one stdout pipe never interleave.
 */
const MAX_BATCH_BYTES = 4096;

/**
 * Standard output, written on the main thread once per event-loop turn (or per 4 KiB): pino's
 * default, sonic-boom's asynchronous mode, sends each write through libuv's threadpool, a round
 * trip the access log paid for every few requests (bench/README.md, "Hot path"). The lines of a
 * turn go out on the next one, so a line is never held while the process idles, and whatever is
 * pending when the process exits (SIGTERM's `process.exit`, a crash) is written before it does.
 */
function batchedStdout(): pino.DestinationStream {
  const out = pino.destination({ dest: 1, sync: true });
  let pending = '';
  let pendingBytes = 0;
  const flush = () => {
    if (pending === '') return;
    const lines = pending;
    pending = '';
    pendingBytes = 0;
    out.write(lines);
  };
  process.on('exit', flush);
  return {
    write(line: string) {
      const bytes = Buffer.byteLength(line);
      if (pendingBytes + bytes > MAX_BATCH_BYTES) flush();
      if (pending === '') setImmediate(flush);
      pending += line;
      pendingBytes += bytes;
    },
  };
}
