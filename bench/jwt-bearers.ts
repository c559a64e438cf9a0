/**
 * A JWT bearer from a trusted issuer against an API key, through one Gatehouse process in the same
 * run: the token is verified once and then remembered until its `exp`, so after the first request
 * both are an in-memory lookup. The rows alternate (key, JWT, key, JWT, …) so drift in the
 * machine's load touches both alike. Run: npm run bench:jwt (BENCH_SECONDS, BENCH_REPEATS).
 * Needs nginx and wrk.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nowSeconds, startTestIssuer } from '../test/support/jwt-issuer.js';
import { printRows, REPEATS, SECONDS, startKeyGateway } from './lib/gateway-rows.js';
import { startJsonUpstream } from './lib/nginx.js';
import { stopAll } from './lib/processes.js';
import { CHAT_PATH, medianOf, runWrk, writeChatScript, type WrkRun } from './lib/wrk.js';

const AUDIENCE = 'https://llm.example.com';
const work = mkdtempSync(join(tmpdir(), 'gatehouse-jwt-bench-'));
const logs = join(work, 'logs');
mkdirSync(logs);
const script = writeChatScript(work);
const [upstream, issuer] = await Promise.all([startJsonUpstream(), startTestIssuer()]);
try {
  const gateway = await startKeyGateway({
    name: 'jwt',
    dist: 'dist',
    work,
    logs,
    upstream: upstream.url,
    configEdits: {
      auth: {
        failed_auth_per_minute: 0,
        trusted_issuers: [
          { name: 'bench', issuer: issuer.url, jwks_uri: issuer.jwksUri, audience: AUDIENCE, scopes: ['all'] },
        ],
      },
      gateway: { log_level: 'warn' },
    },
  });
  const jwt = await issuer.sign({
    iss: issuer.url,
    aud: AUDIENCE,
    sub: 'system:serviceaccount:bench:load',
    iat: nowSeconds(),
    exp: nowSeconds() + 3600,
  });
  const rows: Array<[string, string]> = [
    ['API key', gateway.key],
    ['JWT bearer (trusted issuer)', jwt],
  ];
  const runs = new Map<string, WrkRun[]>(rows.map(([label]) => [label, []]));
  const options = (token: string) => ({
    url: `${gateway.url}${CHAT_PATH}`,
    connections: 32,
    script,
    headers: { authorization: `Bearer ${token}` },
  });
  for (const [, token] of rows) await runWrk({ ...options(token), seconds: 2 });
  for (let i = 0; i < REPEATS; i++) {
    for (const [label, token] of rows) runs.get(label)!.push(await runWrk({ ...options(token), seconds: SECONDS }));
  }
  printRows(
    'JWT bearer against API key, one process',
    rows.map(([label]) => [label, medianOf(runs.get(label)!)]),
  );
} finally {
  await stopAll();
  await Promise.all([upstream.close(), issuer.close()]);
}
