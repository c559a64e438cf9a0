import { Transform, type TransformCallback } from 'node:stream';

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
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      pending += chunk.toString('utf8');
      let match: RegExpExecArray | null;
      let out = '';
      while ((match = EVENT_END.exec(pending))) {
        const end = match.index + match[0].length;
        const event = pending.slice(0, end);
        pending = pending.slice(end);
        if (!keepEvent(event, stripUsageChunk, onUsage)) continue;
        out += event;
      }
      done(null, out || undefined);
    },
    flush(done: TransformCallback) {
      done(null, pending || undefined);
    },
  });
}

function keepEvent(event: string, strip: boolean, onUsage: (usage: TokenUsage) => void): boolean {
  if (!event.includes('"usage"')) return true;
  const data = event
    .split(/\r?\n/)
    .filter((line) => line.startsWith('data:'))
    .map((line) => line.slice(5).trimStart())
    .join('\n');
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    return true;
  }
  const usage = usageOf(parsed);
  if (usage) onUsage(usage);
  const choices = (parsed as { choices?: unknown }).choices;
  return !(strip && usage && Array.isArray(choices) && choices.length === 0);
}

/**
 * Passes a JSON response through unchanged while keeping up to `limit` bytes of it, and reads
 * `usage` from it at the end.
 */
export function jsonUsageTap(onUsage: (usage: TokenUsage) => void, limit = 4 * 1024 * 1024): Transform {
  const parts: Buffer[] = [];
  let size = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      if (size <= limit) parts.push(chunk);
      size += chunk.length;
      done(null, chunk);
    },
    flush(done: TransformCallback) {
      if (size <= limit) {
        try {
          const usage = usageOf(JSON.parse(Buffer.concat(parts).toString('utf8')));
          if (usage) onUsage(usage);
        } catch {
          // Not JSON after all: there is no usage to count.
        }
      }
      done();
    },
  });
}
