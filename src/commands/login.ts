import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatehouseError } from '../errors.js';
import { addressOf, describeReachFailure } from './reach.js';

export interface LoginOptions {
  url: string;
  /** Space- or comma-separated; default inference. */
  scopes?: string;
  /** Writes OPENAI_API_KEY= and OPENAI_BASE_URL= here (mode 0600) instead of printing an export line. */
  writeEnv?: string;
}

export interface LoginIo {
  /** Instructions for the person: the code and where to enter it. */
  tell(line: string): void;
  /** The result a shell may evaluate: the export line. */
  print(line: string): void;
}

const CLIENT_ID = 'gatehouse-cli';
const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:device_code';
/** RFC 8628 3.5: a client told to slow down adds five seconds to its interval. */
const SLOW_DOWN_STEP_SECONDS = 5;

interface DeviceCodeAnswer {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete?: string;
  expires_in: number;
  interval?: number;
}

/**
 * `gatehouse login`: signs this machine in through the gateway's device flow (RFC 8628). It shows a
 * code and a URL, waits while the person approves in any browser, and receives an API key of
 * theirs for this machine.
 */
export async function loginCommand(options: LoginOptions, io: LoginIo): Promise<void> {
  const base = options.url.replace(/\/+$/, '');
  const scope = (options.scopes ?? 'inference')
    .split(/[\s,]+/)
    .filter(Boolean)
    .join(' ');
  const started = (await post(base, '/v1/auth/device/code', {
    client_id: CLIENT_ID,
    scope,
    device_name: hostname(),
  })) as unknown as DeviceCodeAnswer;
  io.tell(`To sign in, open ${started.verification_uri} and enter the code ${started.user_code}`);
  if (started.verification_uri_complete) io.tell(`(or open ${started.verification_uri_complete})`);
  io.tell('Waiting for approval…');

  let interval = started.interval ?? 5;
  const deadline = Date.now() + started.expires_in * 1000;
  while (Date.now() < deadline) {
    await sleep(interval * 1000);
    const answer = await post(
      base,
      '/v1/auth/device/token',
      { grant_type: GRANT_TYPE, device_code: started.device_code },
      true,
    );
    const error = typeof answer.error === 'string' ? answer.error : undefined;
    if (error === 'authorization_pending') continue;
    if (error === 'slow_down') {
      interval += SLOW_DOWN_STEP_SECONDS;
      continue;
    }
    if (error)
      throw new GatehouseError('LOGIN_REFUSED', `Sign-in ended: ${error} (${String(answer.error_description ?? '')})`);
    const key = String(answer.access_token);
    deliver(key, `${base}/v1`, options.writeEnv, io);
    return;
  }
  throw new GatehouseError('LOGIN_EXPIRED', 'The code expired before it was approved; run gatehouse login again.');
}

/** Writes the key where asked, or prints the export line; the file is readable by its owner only. */
function deliver(key: string, baseUrl: string, file: string | undefined, io: LoginIo): void {
  if (!file) {
    io.print(`export OPENAI_API_KEY=${key} OPENAI_BASE_URL=${baseUrl}`);
    return;
  }
  const others = existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((line) => line && !/^(export +)?OPENAI_(API_KEY|BASE_URL)=/.test(line))
    : [];
  // The mode applies only when the file is created; chmod covers a file that was already there.
  writeFileSync(file, [...others, `OPENAI_API_KEY=${key}`, `OPENAI_BASE_URL=${baseUrl}`, ''].join('\n'), {
    mode: 0o600,
  });
  chmodSync(file, 0o600);
  io.tell(`Signed in: OPENAI_API_KEY and OPENAI_BASE_URL written to ${file}`);
}

async function post(
  base: string,
  path: string,
  form: Record<string, string>,
  errorsAreAnswers = false,
): Promise<Record<string, unknown>> {
  let response: Response;
  try {
    response = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams(form),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    const { cause, fix } = describeReachFailure(error, addressOf(base));
    throw new GatehouseError('LOGIN_UNREACHABLE', `Cannot reach ${base}: ${cause}. ${fix}`, { cause: error });
  }
  const text = await response.text();
  let body: Record<string, unknown> | undefined;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = undefined;
  }
  if (body && (response.ok || (errorsAreAnswers && typeof body.error === 'string'))) return body;
  const reason =
    body?.error_description ?? (body?.error as { message?: string } | undefined)?.message ?? text.slice(0, 200);
  throw new GatehouseError(
    'LOGIN_FAILED',
    `${base}${path} answered ${response.status}: ${String(reason)}. Is ${base} a Gatehouse with sign-in on?`,
  );
}
