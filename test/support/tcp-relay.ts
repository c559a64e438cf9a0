/**
 * A TCP relay on 127.0.0.1 in front of a shared service (PostgreSQL, Redis), so a test can make
 * the service "go away" for one gateway without touching the service every other test uses.
 */
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { GatehouseError } from '../../src/errors.js';

export interface TcpRelay {
  /** The port clients connect to instead of the target's. */
  port: number;
  /**
   * Destroys every open connection and turns away new ones (accepted, then closed at once, as a
   * server that died mid-handshake would). The port stays bound, so no other process can take it.
   */
  cut(): void;
  /** Forwards new connections to the target again; connections cut before stay dead. */
  restore(): void;
  /** Connections being forwarded right now. */
  readonly connections: number;
  /** Local ports of the relay's own connections to the target, as the target sees its clients. */
  targetSidePorts(): number[];
  close(): Promise<void>;
}

/** Starts a relay from a free port on 127.0.0.1 to `targetPort` on 127.0.0.1. */
export async function startTcpRelay(targetPort: number): Promise<TcpRelay> {
  const pairs = new Set<{ client: Socket; target: Socket }>();
  let refusing = false;

  const server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const target = connect({ host: '127.0.0.1', port: targetPort });
    const pair = { client, target };
    pairs.add(pair);
    const drop = (): void => {
      pairs.delete(pair);
      client.destroy();
      target.destroy();
    };
    client.on('error', drop).on('close', drop);
    target.on('error', drop).on('close', drop);
    client.pipe(target);
    target.pipe(client);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  const cut = (): void => {
    refusing = true;
    for (const { client, target } of pairs) {
      client.destroy();
      target.destroy();
    }
    pairs.clear();
  };

  return {
    port,
    cut,
    restore() {
      refusing = false;
    },
    get connections() {
      return pairs.size;
    },
    targetSidePorts() {
      return [...pairs].flatMap(({ target }) => (target.localPort === undefined ? [] : [target.localPort]));
    },
    close() {
      cut();
      return new Promise<void>((resolve, reject) =>
        server.close((error) =>
          error
            ? reject(new GatehouseError('TEST_RELAY_CLOSE_FAILED', `relay on port ${port}: ${error.message}`))
            : resolve(),
        ),
      );
    },
  };
}
