import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';

/** Polls `probe` every `everyMs` until it returns true; returns the ms since `since`, or Infinity past `limitMs`. */
export async function msUntil(
  probe: () => Promise<boolean>,
  since: number,
  { everyMs = 50, limitMs = 5_000 } = {},
): Promise<number> {
  while (Date.now() - since < limitMs) {
    if (await probe()) return Date.now() - since;
    await sleep(everyMs);
  }
  return Infinity;
}

/** Sends `attempt` every `everyMs` until it answers `status`, failing past `timeoutMs`; resolves with that answer. */
export async function untilStatus<T extends { status: number }>(
  attempt: () => Promise<T>,
  status: number,
  { everyMs = 100, timeoutMs = 2_000 } = {},
): Promise<T> {
  let answer: T | undefined;
  await expect
    .poll(async () => (answer = await attempt()).status, { interval: everyMs, timeout: timeoutMs })
    .toBe(status);
  return answer!;
}

/**
 * Rate limits count in windows of one wall-clock minute: a test that needs all its requests in one
 * window waits for the next one when fewer than `neededMs` are left of this one.
 */
export async function inOneMinuteWindow(neededMs = 15_000): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < neededMs) await sleep(left + 200);
}
