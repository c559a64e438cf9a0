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
 * Counts a streamed answer as it passes (for budgets). `count` answers false, or a promise of
 * false, when the answer must stop: the tap then sends `finalEvent` and emits `cut`.
 */
export interface StreamMeter {
  count(tokens: number): boolean | Promise<boolean>;
  finalEvent(): string;
}

/**
 * The tokens of one streamed chunk, estimated from its text (a quarter token per character, at
 * least one per chunk with text): the platform reports the real figure only at the end.
 */
export function chunkTokens(event: string): number {
  const data = event
    .split(/\r?\n/)
    .filter((line) => line.startsWith('data:'))
    .map((line) => line.slice(5).trimStart())
    .join('\n');
  if (data === '' || data === '[DONE]') return 0;
  try {
    const chunk = JSON.parse(data) as { choices?: Array<{ delta?: { content?: unknown }; text?: unknown }> };
    let characters = 0;
    for (const choice of Array.isArray(chunk.choices) ? chunk.choices : []) {
      const text = choice?.delta?.content ?? choice?.text;
      if (typeof text === 'string') characters += text.length;
    }
    return characters > 0 ? Math.ceil(characters / 4) : 0;
  } catch {
    return 0;
  }
}

/**
 * Passes a server-sent event stream through event by event, reading OpenAI-style `usage` from the
 * final chunk. With `stripUsageChunk` the usage-only chunk (empty `choices`), which the gateway asked
 * for on the client's behalf, is dropped so the client sees what it asked for. Only an unfinished
 * event is held back, so chunks still reach the client as the platform writes them.
 */
export function sseUsageTap(
  stripUsageChunk: boolean,
  onUsage: (usage: TokenUsage) => void,
  meter?: StreamMeter,
): Transform {
  return new SseUsageTap(stripUsageChunk, onUsage, meter);
}

/** A class rather than closures: one is held per open stream, and methods cost it nothing. */
class SseUsageTap extends Transform {
  private pending = '';
  private cut = false;
  // A multi-byte character may be split between two chunks; the decoder holds its first bytes back.
  private readonly decoder = new StringDecoder('utf8');

  constructor(
    private readonly stripUsageChunk: boolean,
    private readonly onUsage: (usage: TokenUsage) => void,
    private readonly meter?: StreamMeter,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (this.cut) return done();
    const found = this.events(chunk);
    if (this.meter) return void this.metered(this.meter, found, done).catch(done);
    let out = '';
    for (const event of found) {
      const kept = keepEvent(event, this.stripUsageChunk, this.onUsage);
      if (kept !== undefined) out += kept;
    }
    done(null, out || undefined);
  }

  override _flush(done: TransformCallback): void {
    if (this.cut) return done();
    this.pending += this.decoder.end();
    done(null, this.pending || undefined);
  }

  private events(chunk: Buffer): string[] {
    this.pending += this.decoder.write(chunk);
    const found: string[] = [];
    let match: RegExpExecArray | null;
    while ((match = EVENT_END.exec(this.pending))) {
      const end = match.index + match[0].length;
      found.push(this.pending.slice(0, end));
      this.pending = this.pending.slice(end);
    }
    return found;
  }

  /** Metered: each event is counted before it is passed on, waiting for the ledger when it must. */
  private async metered(meter: StreamMeter, found: string[], done: TransformCallback): Promise<void> {
    let out = '';
    for (const event of found) {
      const verdict = meter.count(chunkTokens(event));
      if (!(verdict === true || (verdict !== false && (await verdict)))) {
        this.cut = true;
        done(null, out + meter.finalEvent());
        this.emit('cut');
        return;
      }
      const kept = keepEvent(event, this.stripUsageChunk, this.onUsage);
      if (kept !== undefined) out += kept;
    }
    done(null, out || undefined);
  }
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
