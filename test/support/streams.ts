import { expect } from 'vitest';

export interface OpenStream {
  /** What has arrived so far. */
  received: string;
  /** Reads on until the gateway ends or cuts the stream; aborts it after `giveUpMs`. */
  readToEnd(giveUpMs: number): Promise<{ received: string; stillOpen: boolean }>;
}

/** Opens an event stream through the gateway and waits for its first event. */
export async function openStream(url: string, headers: Record<string, string>): Promise<OpenStream> {
  const reading = new AbortController();
  const response = await fetch(url, { headers, signal: reading.signal });
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  const stream: OpenStream = {
    received: decoder.decode((await reader.read()).value),
    async readToEnd(giveUpMs) {
      // Waiting for a long stream to run out would only make a failure slower to report.
      const giveUp = setTimeout(() => reading.abort(), giveUpMs);
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          stream.received += decoder.decode(value, { stream: true });
        }
      } catch {
        // The gateway may end the response or reset the connection; either is a cut.
      } finally {
        clearTimeout(giveUp);
      }
      return { received: stream.received, stillOpen: reading.signal.aborted };
    },
  };
  expect(stream.received).toContain('data: ');
  return stream;
}
