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
