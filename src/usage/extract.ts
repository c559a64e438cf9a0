import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

export interface TokenUsage {
  prompt_tokens: number;
  completion_tokens: number;
}

function usageOf(value: unknown): TokenUsage | undefined {
  const usage = (value as { usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } } | null)?.usage;
  if (!usage || typeof usage !== 'object') return undefined;
  const prompt = Number(usage.prompt_tokens ?? 0);
  const completion = Number(usage.completion_tokens ?? 0);
  if (!Number.isFinite(prompt) || !Number.isFinite(completion)) return undefined;
  return { prompt_tokens: Math.max(0, Math.trunc(prompt)), completion_tokens: Math.max(0, Math.trunc(completion)) };
}

const EVENT_END = /\r?\n\r?\n/;

/**
 * Passes a server-sent event stream through event by event, reading OpenAI-style `usage` from the
 * final chunk. With `stripUsageChunk` the usage-only chunk (empty `choices`), which the gateway asked
 * for on the client's behalf, is dropped so the client sees what it asked for. Only an unfinished
 * event is held back, so chunks still reach the client as the platform writes them.
 */
export function sseUsageTap(stripUsageChunk: boolean, onUsage: (usage: TokenUsage) => void): Transform {
  let pending = '';
  // A multi-byte character may be split between two chunks; the decoder holds its first bytes back.
  const decoder = new StringDecoder('utf8');
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      pending += decoder.write(chunk);
      let match: RegExpExecArray | null;
      let out = '';
      while ((match = EVENT_END.exec(pending))) {
        const end = match.index + match[0].length;
        const event = pending.slice(0, end);
        pending = pending.slice(end);
        const kept = keepEvent(event, stripUsageChunk, onUsage);
        if (kept !== undefined) out += kept;
      }
      done(null, out || undefined);
    },
    flush(done: TransformCallback) {
      pending += decoder.end();
      done(null, pending || undefined);
    },
  });
}

/**
 * The event as the client should see it, or undefined to drop it. When the gateway asked for usage
 * on the client's behalf, the usage-only chunk is dropped and the `"usage": null` the platform then
 * adds to every other chunk is removed again.
 */
function keepEvent(event: string, strip: boolean, onUsage: (usage: TokenUsage) => void): string | undefined {
  if (!event.includes('"usage"')) return event;
  const lines = event.split(/\r?\n/);
  const data = lines
    .filter((line) => line.startsWith('data:'))
    .map((line) => line.slice(5).trimStart())
    .join('\n');
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    return event;
  }
  const usage = usageOf(parsed);
  if (usage) onUsage(usage);
  if (!strip || typeof parsed !== 'object' || parsed === null) return event;
  const chunk = parsed as { choices?: unknown; usage?: unknown };
  if (usage && Array.isArray(chunk.choices) && chunk.choices.length === 0) return undefined;
  if (chunk.usage !== null) return event;
  delete chunk.usage;
  const newline = event.includes('\r\n') ? '\r\n' : '\n';
  const others = lines.filter((line) => line !== '' && !line.startsWith('data:'));
  return [...others, `data: ${JSON.stringify(chunk)}`].join(newline) + newline + newline;
}

/** The `usage` of a whole JSON answer; undefined when it has none or is not JSON after all. */
export function jsonUsage(body: Buffer): TokenUsage | undefined {
  try {
    return usageOf(JSON.parse(body.toString('utf8')));
  } catch {
    return undefined;
  }
}

/**
 * Reads `usage` from a JSON response while it passes to the client untouched: a listener beside
 * the client's, keeping up to `limit` bytes, so the answer itself is never re-streamed.
 */
export function watchJsonUsage(body: Readable, onUsage: (usage: TokenUsage) => void, limit = 4 * 1024 * 1024): void {
  const parts: Buffer[] = [];
  let size = 0;
  body.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= limit) parts.push(chunk);
  });
  body.once('end', () => {
    if (size > limit) return;
    const usage = jsonUsage(Buffer.concat(parts));
    if (usage) onUsage(usage);
  });
}
