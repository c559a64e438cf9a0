import { randomInt } from 'node:crypto';
import { createServer } from 'node:net';

/**
 * Below Linux's ephemeral range (32768–60999): the kernel never hands these to an outgoing
 * connection or to a listener on port 0, which took a port between "free" and the gateway's listen
 * when tests ran in parallel (EADDRINUSE).
 */
const LOWEST = 20_000;
const HIGHEST = 32_767;

/** A TCP port free on 127.0.0.1 right now, for servers whose URL must be known before they start. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = randomInt(LOWEST, HIGHEST + 1);
    if (await isFree(port)) return port;
  }
  throw new Error(`no free port found between ${LOWEST} and ${HIGHEST} on 127.0.0.1`);
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
