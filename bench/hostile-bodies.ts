/**
 * `node --import tsx bench/hostile-bodies.ts`: /healthz latency while sixteen hostile bodies are in
 * flight (issue 12, finding 1), as test/e2e/body-limits.test.ts asserts it. Starts a gateway in this
 * process with the faulty test provider and the sample platform, signs in, makes a key, and prints
 * /healthz p99 quiet and under the load. HOSTILE_SECONDS (default 10) sets the length of the run.
 */
import { Browserless } from '../test/support/browserless.js';
import { describeHealthzRun, measureHealthzUnderHostileBodies } from '../test/support/hostile-bodies.js';
import { signInForSession } from '../test/support/sign-in.js';
import { startFaultyStack } from '../test/support/stack.js';

const CHECKED_BODY_MB = 1;
const seconds = Number(process.env.HOSTILE_SECONDS ?? 10);

const stack = await startFaultyStack({
  auth: { failed_auth_per_minute: 0 },
  gateway: { max_checked_body_mb: CHECKED_BODY_MB, log_level: 'warn' },
});
try {
  const browser = new Browserless();
  await signInForSession(stack, browser);
  const created = await browser.fetch(`${stack.url}/v1/auth/api-keys`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: stack.url },
    body: JSON.stringify({ name: 'hostile bodies' }),
  });
  const { key } = (await created.json()) as { key: string };
  const run = await measureHealthzUnderHostileBodies({ url: stack.url, key, checkedBodyMb: CHECKED_BODY_MB, seconds });
  console.log(describeHealthzRun(run));
} finally {
  await stack.close();
}
