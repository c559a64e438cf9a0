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
import { cpuTimeOf, stopAll } from './lib/processes.js';
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
  /** CPU the gateway spent, and requests it served, per row: steadier than req/s on a shared machine. */
  const cpu = new Map<string, { ms: number; requests: number }>(rows.map(([label]) => [label, { ms: 0, requests: 0 }]));
  const cpuMs = () => {
    const { userMs, systemMs } = cpuTimeOf(gateway.service.pid);
    return userMs + systemMs;
  };
  const options = (token: string) => ({
    url: `${gateway.url}${CHAT_PATH}`,
    connections: 32,
    script,
    headers: { authorization: `Bearer ${token}` },
  });
  for (const [, token] of rows) await runWrk({ ...options(token), seconds: 2 });
  for (let i = 0; i < REPEATS; i++) {
    for (const [label, token] of rows) {
      const before = cpuMs();
      const run = await runWrk({ ...options(token), seconds: SECONDS });
      runs.get(label)!.push(run);
      const spent = cpu.get(label)!;
      spent.ms += cpuMs() - before;
      spent.requests += run.requests;
    }
  }
  printRows(
    'JWT bearer against API key, one process',
    rows.map(([label]) => [label, medianOf(runs.get(label)!)]),
  );
  console.log('\n| Row | gateway CPU per request (µs) |\n| --- | --- |');
  for (const [label, { ms, requests }] of cpu) console.log(`| ${label} | ${Math.round((ms * 1000) / requests)} |`);
} finally {
  await stopAll();
  await Promise.all([upstream.close(), issuer.close()]);
}
