import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';

/**
 * Writes a raw request head to `url`'s host and port and resolves with the status code of the
 * answer; for heads fetch and node:http refuse to send (non-Latin-1 values, headers past the
 * server's limit, malformed request lines).
 */
export function rawStatus(url: string, head: string | Buffer): Promise<number> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    let received = '';
    const socket = connect(Number(port), hostname, () => socket.write(head));
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      const status = /^HTTP\/1\.1 (\d{3})/.exec(received);
      if (status) {
        socket.destroy();
        resolve(Number(status[1]));
      }
    });
    // The server may close while an oversized head is still being written; its answer came first.
    socket.on('error', () => undefined);
    socket.on('close', () => reject(new Error(`no HTTP answer; got ${JSON.stringify(received.slice(0, 200))}`)));
  });
}

export interface RawAnswer {
  status: number;
  /** The header lines, lower-cased. */
  head: string;
  body: string;
}

/**
 * Sends bytes as they are (fetch refuses non-Latin-1 header values and oversized heads) and parses
 * the answer once the server closes; ask for that with `Connection: close`. Fails after `withinMs`
 * so a hung connection names itself.
 */
export function rawExchange(url: string, request: Buffer | string, withinMs = 5_000): Promise<RawAnswer> {
  const { hostname, port } = new URL(url);
  const bytes = Buffer.isBuffer(request) ? request : Buffer.from(request, 'latin1');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    // write, not end: Node's HTTP server aborts a request whose client half-closes before the answer
    // (httpAllowHalfOpen is off), which only a fast SQLite lookup would outrun. Connection: close ends it.
    const socket = connect(Number(port), hostname, () => socket.write(bytes));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new Error(`no answer within ${withinMs} ms to ${JSON.stringify(bytes.subarray(0, 120).toString('latin1'))}`),
      );
    }, withinMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    // The server may close while an oversized head is still being written; its answer came first.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(text);
      if (!match) return reject(new Error(`no HTTP answer: ${JSON.stringify(text.slice(0, 200))}`));
      resolve({ status: Number(match[1]), head: match[2]!.toLowerCase(), body: match[3]! });
    });
  });
}

export interface NodeAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The body as UTF-8. */
  text: string;
}

/**
 * One request over node:http, for what fetch will not send: a target written byte for byte (fetch
 * resolves `..`, `.` and `%2e%2e`), headers as a flat [name, value, ...] list whose names keep
 * their case, repeat, carry underscores or override Host, or a chosen local address.
 */
export function sendRequest(
  url: string,
  options: {
    method?: string;
    path?: string;
    headers?: Record<string, string | number> | string[];
    body?: Buffer | string;
    localAddress?: string;
  } = {},
): Promise<NodeAnswer> {
  let headers = options.headers ?? {};
  // With a header list node:http adds no Host of its own, and HTTP/1.1 requires one (RFC 9112 3.2).
  if (Array.isArray(headers) && !headers.some((name, index) => index % 2 === 0 && name.toLowerCase() === 'host'))
    headers = ['Host', new URL(url).host, ...headers];
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest(
      url,
      {
        method: options.method ?? 'GET',
        // An explicit `path: undefined` would replace the URL's path with '/'.
        ...(options.path === undefined ? {} : { path: options.path }),
        headers,
        localAddress: options.localAddress,
      },
      (response) => {
        const parts: Buffer[] = [];
        response.on('data', (part: Buffer) => parts.push(part));
        response.on('end', () => {
          const body = Buffer.concat(parts);
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body, text: body.toString('utf8') });
        });
        response.on('error', reject);
      },
    );
    outgoing.on('error', reject);
    outgoing.end(options.body);
  });
}
