import { randomBytes } from 'node:crypto';
import { ADMIN_PATH } from '../routes/admin.js';
import { loadConfigFromObject } from '../config/index.js';
import { GatehouseError } from '../errors.js';
import { createLogger } from '../log.js';
import { buildGateway } from '../server.js';
import { startSamplePlatform } from './platform.js';
import { DEMO_USER, startDemoProvider } from './provider.js';

/** The highest gateway port leaving room for the provider's and the platform's after it. */
const MAX_GATEWAY_PORT = 65_533;

export interface DemoOptions {
  /** The gateway's port; the demo provider takes the next one and the sample platform the one after. */
  port: number;
  dataDir?: string;
}

/**
 * The embedded default: a development provider, a sample platform and the gateway on 127.0.0.1,
 * configured exactly as an operator would configure a real deployment.
 */
export async function runDemo({ port, dataDir = './.gatehouse-demo' }: DemoOptions): Promise<void> {
  if (!Number.isInteger(port) || port < 1 || port > MAX_GATEWAY_PORT) {
    throw new GatehouseError('DEMO_PORT_INVALID', `--port must be a whole number from 1 to ${MAX_GATEWAY_PORT}`);
  }
  const website = `http://127.0.0.1:${port}`;
  const clientSecret = randomBytes(24).toString('base64url');
  const platform = await onPort('sample platform', port + 2, port, () =>
    startSamplePlatform({ port: port + 2, chunkDelayMs: 80 }),
  );
  const provider = await onPort('demo provider', port + 1, port, () =>
    startDemoProvider({
      port: port + 1,
      clients: [
        {
          client_id: 'gatehouse-demo',
          client_secret: clientSecret,
          redirect_uris: [`${website}/v1/auth/auth`],
          post_logout_redirect_uris: [website],
        },
      ],
    }),
  );
  const config = loadConfigFromObject(
    {
      // The demo user is an admin, so the admin console can be tried too.
      auth: { admin_emails: [DEMO_USER.email] },
      powerml: { website },
      auth_provider: {
        client_id: 'gatehouse-demo',
        client_secret: clientSecret,
        server_metadata_url: provider.metadataUrl,
      },
      gateway: { host: '127.0.0.1', port, upstream: platform.url, data_dir: dataDir },
      database: { url: `sqlite:${dataDir}/gatehouse.db` },
    },
    'gatehouse demo',
  );
  const log = createLogger(process.env.LOG_LEVEL ?? 'warn');
  const gateway = await buildGateway(config, log);
  await onPort('gateway', port, port, () => gateway.app.listen({ host: '127.0.0.1', port }));
  await gateway.providerAttempted;

  process.stdout.write(
    [
      '',
      'Gatehouse demo is running.',
      '',
      `  Open              ${website}/v1/auth/account`,
      `  Sign in as        ${DEMO_USER.email}  /  password: ${DEMO_USER.password}   (an admin)`,
      `  Admin console     ${website}${ADMIN_PATH}`,
      '',
      `  Gateway           ${website}   (the only door; everything else is behind it)`,
      `  Demo provider     ${provider.issuer}`,
      `  Sample platform   ${platform.url}   (OpenAI-compatible: /v1/models, /v1/completions, /v1/chat/completions)`,
      `  Data              ${dataDir}/gatehouse.db`,
      '',
      'Try it from a terminal after creating an API key on the account page:',
      `  curl ${website}/v1/chat/completions -H "Authorization: Bearer <key>" \\`,
      `       -H "Content-Type: application/json" -d '{"model":"demo-small","stream":true,"messages":[{"role":"user","content":"hello"}]}'`,
      '',
      'Press Ctrl+C to stop.',
      '',
    ].join('\n'),
  );

  const stop = async () => {
    await gateway.close();
    await Promise.all([provider.close(), platform.close()]);
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

/**
 * Runs `start`, which listens on `port`; a port already taken becomes a message naming it and the
 * `--port` flag, since the demo's three ports are fixed relative to each other.
 */
async function onPort<T>(what: string, port: number, gatewayPort: number, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (error) {
    if (!hasErrno(error, 'EADDRINUSE')) throw error;
    const other = gatewayPort + 10 <= MAX_GATEWAY_PORT ? gatewayPort + 10 : 5001;
    throw new GatehouseError(
      'DEMO_PORT_IN_USE',
      `port ${port} on 127.0.0.1 (the ${what}) is already in use: stop what listens there, or choose other ports ` +
        `with --port (e.g. npm run demo -- --port ${other}, or gatehouse demo --port ${other}); the demo uses ` +
        `the port given (gateway), the next one (demo provider) and the one after (sample platform)`,
      { cause: error },
    );
  }
}

/** True when `error` or one of its causes has this system error code (listen errors get wrapped). */
function hasErrno(error: unknown, code: string): boolean {
  for (let at = error, depth = 0; at instanceof Error && depth < 5; at = at.cause, depth += 1) {
    if ((at as NodeJS.ErrnoException).code === code) return true;
  }
  return false;
}
