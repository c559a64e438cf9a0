import { setTimeout as sleep } from 'node:timers/promises';

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
