/**
 * Runs Debian's real nginx as an unprivileged child process for forward-auth tests: every file it
 * writes (pid, logs, temp bodies) lives in a throwaway directory, and it listens on a free
 * 127.0.0.1 port. Pair with `requireResource('nginx', hasNginx(), ...)`.
 */
import { execFile, spawn } from 'node:child_process';
import { access, constants, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatehouseError } from '../../src/errors.js';
import { freePort } from './ports.js';
import { hasTcp } from './requirements.js';

export const nginxPath = '/usr/sbin/nginx';

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

/** True when nginx runs and was built with `auth_request` (nginx-light, nginx-core and nginx-full are). */
export async function hasNginx(): Promise<boolean> {
  try {
    await access(nginxPath, constants.X_OK);
  } catch {
    return false;
  }
  return new Promise((resolve) => {
    // `nginx -V` writes its build options to stderr.
    execFile(nginxPath, ['-V'], { timeout: 15_000 }, (error, _stdout, stderr) => {
      resolve(!error && stderr.includes('--with-http_auth_request_module'));
    });
  });
}

/** Where nginx keeps its files, for the `http` block every test config needs. */
export interface NginxPaths {
  /** The throwaway directory; nginx's prefix (`-p`). */
  dir: string;
  /** `127.0.0.1:PORT`, for `listen`. */
  listen: string;
  /** The `pid`, `error_log`, `access_log` and `*_temp_path` directives, all inside `dir`. */
  housekeeping: { main: string; http: string };
}

export interface RunningNginx {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** The nginx.conf it runs, for failure messages. */
  config: string;
  /** nginx's error log so far, for failure messages. */
  errorLog(): Promise<string>;
  close(): Promise<void>;
}

/**
 * Writes the config `render` returns into a fresh directory and runs nginx in the foreground with
 * it, resolving once the port (a free one unless given) accepts connections. `render` gets the
 * paths to use; the `events` block and the directives in `housekeeping` are the caller's to place.
 */
export async function startNginx(render: (paths: NginxPaths) => string, port?: number): Promise<RunningNginx> {
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-nginx-'));
  const listenPort = port ?? (await freePort());
  const errorLogPath = join(dir, 'error.log');
  const paths: NginxPaths = {
    dir,
    listen: `127.0.0.1:${listenPort}`,
    housekeeping: {
      // Without a master process nginx neither forks nor switches to the `nobody` user (which could
      // not read this directory when the tests run as root), and the child's pid is nginx itself.
      main: [
        'daemon off;',
        'master_process off;',
        `pid ${join(dir, 'nginx.pid')};`,
        `error_log ${errorLogPath} info;`,
      ].join('\n'),
      http: [
        `access_log ${join(dir, 'access.log')};`,
        `client_body_temp_path ${join(dir, 'client_body')};`,
        `proxy_temp_path ${join(dir, 'proxy')};`,
        `fastcgi_temp_path ${join(dir, 'fastcgi')};`,
        `uwsgi_temp_path ${join(dir, 'uwsgi')};`,
        `scgi_temp_path ${join(dir, 'scgi')};`,
      ].join('\n'),
    },
  };
  const config = render(paths);
  const configPath = join(dir, 'nginx.conf');
  await writeFile(configPath, config);

  const errorLog = () => readFile(errorLogPath, 'utf8').catch(() => '');
  // `-e` replaces the compiled-in error log, which nginx opens before it reads the config.
  const child = spawn(nginxPath, ['-p', `${dir}/`, '-c', configPath, '-e', errorLogPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += String(chunk)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const started = Date.now();
  while (!(await hasTcp(listenPort))) {
    if (child.exitCode !== null || Date.now() - started > START_TIMEOUT_MS) {
      child.kill('SIGKILL');
      throw new GatehouseError(
        'NGINX_DID_NOT_START',
        `nginx did not start (exit ${child.exitCode}): ${stderr}${await errorLog()}\n--- ${configPath}\n${config}`,
      );
    }
    await sleep(50);
  }

  return {
    url: `http://${paths.listen}`,
    config,
    errorLog,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGTERM is nginx's fast shutdown; SIGQUIT would wait for idle keep-alive connections.
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(STOP_TIMEOUT_MS).then(() => child.kill('SIGKILL'))]);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
