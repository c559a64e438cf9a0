import { randomBytes } from 'node:crypto';
import { loadConfigFromObject } from '../config/index.js';
import { createLogger } from '../log.js';
import { buildGateway } from '../server.js';
import { startSamplePlatform } from './platform.js';
import { DEMO_USER, startDemoProvider } from './provider.js';

export interface DemoOptions {
  port: number;
  dataDir?: string;
}

/**
 * The embedded default: a development provider, a sample platform and the gateway on 127.0.0.1,
 * configured exactly as an operator would configure a real deployment.
 */
export async function runDemo({ port, dataDir = './.gatehouse-demo' }: DemoOptions): Promise<void> {
  const website = `http://127.0.0.1:${port}`;
  const clientSecret = randomBytes(24).toString('base64url');
  const platform = await startSamplePlatform({ port: port + 2, chunkDelayMs: 80 });
  const provider = await startDemoProvider({
    port: port + 1,
    clients: [
      {
        client_id: 'gatehouse-demo',
        client_secret: clientSecret,
        redirect_uris: [`${website}/v1/auth/auth`],
        post_logout_redirect_uris: [website],
      },
    ],
  });
  const config = loadConfigFromObject(
    {
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
  await gateway.app.listen({ host: '127.0.0.1', port });
  await gateway.providerAttempted;

  process.stdout.write(
    [
      '',
      'Gatehouse demo is running.',
      '',
      `  Open              ${website}/v1/auth/account`,
      `  Sign in as        ${DEMO_USER.email}  /  password: ${DEMO_USER.password}`,
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
