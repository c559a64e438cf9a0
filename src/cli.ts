#!/usr/bin/env -S node --max-semi-space-size=8
// A Node flag for a smaller resident set, measured on Node 24 (bench/README.md): the young generation
// is capped at 2 × 8 MB instead of 2 × 16 MB, which lowered the peak under load by 12–40 MiB with CPU
// per request within noise. The Dockerfile, `npm start`, the bench and the tests run with the same flag.
import './runtime.js';
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { createKeyCommand, listKeysCommand, revokeKeyCommand, type CreateKeyOptions } from './commands/keys.js';
import { loadConfig, loadDatabaseConfig, redactConfig, resolveConfigPath, type Config } from './config/index.js';
import { packageRoot } from './config/yaml.js';
import { GatehouseError } from './errors.js';
import { createLogger } from './log.js';
import { buildGateway } from './server.js';
import { migrateStorage, openStorage } from './storage/database.js';
import { workerLink } from './workers/link.js';

const program = new Command()
  .name('gatehouse')
  .description('OpenID Connect sign-in gateway in front of a self-hosted LLM platform')
  .version((JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version)
  .showHelpAfterError();

const configOption = [
  '--config <file>',
  'llama_config_edits.yaml (default: $GATEHOUSE_CONFIG, else ./llama_config_edits.yaml)',
] as const;

function readConfig(flag: string | undefined): Config {
  return loadConfig(resolveConfigPath(flag));
}

/** For commands that only reach the database: the provider and the platform need not be configured. */
function readDatabaseConfig(flag: string | undefined) {
  return loadDatabaseConfig(resolveConfigPath(flag));
}

/** Starts a gateway, or with gateway.workers > 1 a primary and its workers, and keeps it until SIGTERM/SIGINT. */
async function serve(config: Config): Promise<void> {
  const count = workerCount(config.gateway.workers);
  if (count > 1 && cluster.isPrimary) {
    const { runPrimary } = await import('./workers/primary.js');
    return runPrimary(config, createLogger(process.env.LOG_LEVEL ?? config.gateway.log_level), count);
  }
  const link = workerLink();
  const rootLog = createLogger(process.env.LOG_LEVEL ?? config.gateway.log_level);
  // Which worker wrote a line (the access log's included) tells their shares of the traffic apart.
  const log = link ? rootLog.child({ worker: link.slot, pid: process.pid }) : rootLog;
  const gateway = await buildGateway(config, log);
  const address = await gateway.app.listen({
    host: config.gateway.host,
    ...(link
      ? // Each worker's own socket on the shared port: the kernel spreads connections among them.
        { port: link.port, reusePort: true, exclusive: true }
      : { port: config.gateway.port }),
  });
  const { metrics_port: metricsPort, metrics_host: metricsHost } = config.gateway;
  // With several workers the primary serves the metrics port, summing every worker's figures.
  if (link) gateway.metrics?.answerScrapesFromPrimary();
  const metricsServer =
    gateway.metrics && metricsPort !== undefined && !link
      ? await (await import('./metrics/metrics.js')).serveMetrics(gateway.metrics.registry, metricsHost, metricsPort)
      : undefined;
  log.info(
    { address, upstream: config.gateway.upstream, metrics: metricsServer && `${metricsHost}:${metricsPort}` },
    'gatehouse is listening',
  );
  link?.listening();
  // Stop accepting, let requests and open streams finish for the grace period, then cut what is left.
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, graceSeconds: config.gateway.shutdown_grace_seconds }, 'shutting down');
    const deadline = setTimeout(
      () => gateway.app.server.closeAllConnections(),
      config.gateway.shutdown_grace_seconds * 1000,
    );
    deadline.unref();
    // server.close() drops only the connections idle at that moment; a keep-alive connection whose
    // stream ends later would hold the process until the deadline, so idle ones are swept as they come.
    const sweep = setInterval(() => gateway.app.server.closeIdleConnections(), 100);
    metricsServer?.close();
    await gateway.close();
    clearInterval(sweep);
    clearTimeout(deadline);
    log.info('stopped');
    process.exit(0);
  };
  // A worker hears Ctrl-C's SIGINT (it reaches the whole process group) and the primary's SIGTERM:
  // the second starts nothing new. A signal repeated kills at once, as before.
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  // A worker whose primary died would serve on unsupervised, with counters no one else sees.
  if (link) process.once('disconnect', () => void stop('primary exited'));
}

function workerCount(setting: number | 'auto'): number {
  return setting === 'auto' ? availableParallelism() : setting;
}

program
  .command('serve')
  .description('run the gateway')
  .option(...configOption)
  .action(async (options: { config?: string }) => serve(readConfig(options.config)));

program
  .command('config')
  .description('work with the configuration')
  .command('check')
  .description('validate the configuration and print it with secrets redacted')
  .option(...configOption)
  .action((options: { config?: string }) => {
    const config = readConfig(options.config);
    process.stdout.write(`${JSON.stringify(redactConfig(config), null, 2)}\n`);
    process.stderr.write(`configuration ${config.source} is valid\n`);
  });

program
  .command('demo')
  .description('run a development provider, a sample platform and the gateway on 127.0.0.1')
  .option('--port <port>', 'gateway port', '5001')
  .action(async (options: { port: string }) => {
    const { runDemo } = await import('./demo/run.js');
    await runDemo({ port: Number(options.port) });
  });

const keys = program.command('keys').description('manage API keys in the configured database');
keys
  .command('create')
  .description('create an API key for a user (recorded by email if they never signed in) and print it once')
  .requiredOption('--email <email>', "the owner's email")
  .requiredOption('--name <name>', 'a name to tell the key apart')
  .option('--expires-in-days <days>', 'days until the key stops working', parsePositiveInteger)
  .option('--scopes <list>', 'comma-separated: inference, training, read, all (default all)', parseList)
  .option('--models <list>', 'comma-separated models the key may use (default any)', parseList)
  .option('--requests-per-minute <n>', 'request limit of this key', parsePositiveInteger)
  .option('--tokens-per-minute <n>', 'token limit of this key', parsePositiveInteger)
  .option(...configOption)
  .action(async (options: CreateKeyOptions & { config?: string }) => {
    process.stdout.write(await createKeyCommand(readDatabaseConfig(options.config), options));
  });
keys
  .command('list')
  .description('list API keys (no secrets)')
  .option('--email <email>', "only this user's keys")
  .option(...configOption)
  .action(async (options: { email?: string; config?: string }) => {
    process.stdout.write(await listKeysCommand(readDatabaseConfig(options.config), options));
  });
keys
  .command('revoke')
  .description('revoke an API key by id')
  .argument('<id>', 'the key id, as shown by keys list')
  .option(...configOption)
  .action(async (id: string, options: { config?: string }) => {
    process.stdout.write(await revokeKeyCommand(readDatabaseConfig(options.config), id));
  });

program
  .command('migrate')
  .description('apply pending database migrations and exit')
  .option(...configOption)
  .action(async (options: { config?: string }) => {
    const { database } = readDatabaseConfig(options.config);
    const storage = await openStorage({ ...database, auto_migrate: false });
    try {
      const applied = await migrateStorage(storage, database.schema);
      process.stdout.write(
        applied.length === 0
          ? 'database is up to date: no migration to apply\n'
          : `applied ${applied.length} migration${applied.length === 1 ? '' : 's'}: ${applied.join(', ')}\n`,
      );
    } finally {
      await storage.close();
    }
  });

program
  .command('doctor')
  .description(
    'check the provider, client secret, redirect URI, platform, database and Redis, with a fix for each failure (changes nothing)',
  )
  .option(...configOption)
  .action(async (options: { config?: string }) => {
    const { formatDoctor, runDoctor } = await import('./commands/doctor.js');
    const results = await runDoctor(readConfig(options.config));
    process.stdout.write(formatDoctor(results));
    if (results.some((result) => !result.ok)) process.exitCode = 1;
  });

program
  .command('login')
  .description("sign this machine in through a gateway's browser approval (device flow) and keep the API key it gets")
  .requiredOption('--url <url>', 'the gateway, e.g. https://llm.example.com')
  .option('--scopes <list>', 'inference, training, read or all, comma-separated (default inference)')
  .option(
    '--write-env <file>',
    'write OPENAI_API_KEY= and OPENAI_BASE_URL= to this file (mode 0600) instead of printing an export line',
  )
  .action(async (options: { url: string; scopes?: string; writeEnv?: string }) => {
    const { loginCommand } = await import('./commands/login.js');
    await loginCommand(options, {
      tell: (line) => process.stderr.write(`${line}\n`),
      print: (line) => process.stdout.write(`${line}\n`),
    });
  });

function parseList(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

function parsePositiveInteger(value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) throw new InvalidArgumentError('must be a whole number, 1 or more');
  return number;
}

program.parseAsync().catch((error: unknown) => {
  if (error instanceof GatehouseError) {
    process.stderr.write(`gatehouse: ${error.message}\n`);
  } else {
    process.stderr.write(
      `gatehouse: unexpected failure: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
  }
  process.exit(1);
});
