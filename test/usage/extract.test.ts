import { once } from 'node:events';
import { PassThrough, type Transform } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { sseUsageTap, watchJsonUsage, type TokenUsage } from '../../src/usage/extract.js';

const USAGE = { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 };

/** One `data:` event as OpenAI writes it; `eol` lets the same stream be built with CRLF. */
function event(data: unknown, eol = '\n'): string {
  return `data: ${typeof data === 'string' ? data : JSON.stringify(data)}${eol}${eol}`;
}

function chunk(content: string, usage?: null | typeof USAGE) {
  return {
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    choices: [{ index: 0, delta: { content }, finish_reason: null }],
    ...(usage === undefined ? {} : { usage }),
  };
}

/** A usage-only chunk: empty `choices`, the totals in `usage` (stream_options.include_usage). */
const usageOnly = { id: 'chatcmpl-1', object: 'chat.completion.chunk', choices: [], usage: USAGE };

const ASCII_WORDS = ['Hello ', 'there, ', 'world!'];
/** é is 2 bytes in UTF-8, — 3 and the emoji 4: splits inside them test the decoding of chunks. */
const MULTIBYTE_WORDS = ['Bonjour ', 'café — ', '🙂!'];

/**
 * A stream as the platform sends it when asked for usage, and as the client that did not ask must
 * see it: no usage-only chunk, and no `"usage": null` on the content chunks.
 */
function platformStream(eol = '\n', words = ASCII_WORDS): { all: string; withoutUsageChunk: string } {
  const done = event('[DONE]', eol);
  return {
    all: [...words.map((word) => event(chunk(word, null), eol)), event(usageOnly, eol), done].join(''),
    withoutUsageChunk: [...words.map((word) => event(chunk(word), eol)), done].join(''),
  };
}

interface TapResult {
  output: string;
  reported: TokenUsage[];
}

/** Writes `pieces` into the tap one by one and collects everything it passes on. */
async function runTap(makeTap: (onUsage: (usage: TokenUsage) => void) => Transform, pieces: Buffer[]) {
  const reported: TokenUsage[] = [];
  const tap = makeTap((usage) => reported.push(usage));
  const out: Buffer[] = [];
  tap.on('data', (data: Buffer) => out.push(Buffer.from(data)));
  const ended = once(tap, 'end');
  for (const piece of pieces) tap.write(piece);
  tap.end();
  await ended;
  return { output: Buffer.concat(out).toString('utf8'), reported } satisfies TapResult;
}

/** The bytes of `text` cut into two pieces at `at`, which may fall inside a character. */
function splitAt(text: string, at: number): Buffer[] {
  const bytes = Buffer.from(text, 'utf8');
  return [bytes.subarray(0, at), bytes.subarray(at)];
}

function byteByByte(text: string): Buffer[] {
  return [...Buffer.from(text, 'utf8')].map((byte) => Buffer.from([byte]));
}

function everySplit(text: string): number[] {
  return Array.from({ length: Buffer.byteLength(text, 'utf8') + 1 }, (_, at) => at);
}

const REPORTED = { prompt_tokens: 7, completion_tokens: 3 };

describe('sseUsageTap', () => {
  describe.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
  ])('events ending in %s', (_label, eol) => {
    const stream = platformStream(eol);

    it('keeps the stream byte for byte and reports usage once, split at every byte position', async () => {
      for (const at of everySplit(stream.all)) {
        const result = await runTap((onUsage) => sseUsageTap(false, onUsage), splitAt(stream.all, at));
        expect(result.output, `split at byte ${at}`).toBe(stream.all);
        expect(result.reported, `split at byte ${at}`).toEqual([REPORTED]);
      }
    });

    it('strips only the usage-only chunk and still ends with [DONE], split at every byte position', async () => {
      for (const at of everySplit(stream.all)) {
        const result = await runTap((onUsage) => sseUsageTap(true, onUsage), splitAt(stream.all, at));
        expect(result.output, `split at byte ${at}`).toBe(stream.withoutUsageChunk);
        expect(result.output.endsWith(`data: [DONE]${eol}${eol}`)).toBe(true);
        expect(result.reported, `split at byte ${at}`).toEqual([REPORTED]);
      }
    });

    it('copes with a stream delivered one byte at a time', async () => {
      const kept = await runTap((onUsage) => sseUsageTap(false, onUsage), byteByByte(stream.all));
      expect(kept).toEqual({ output: stream.all, reported: [REPORTED] });
      const stripped = await runTap((onUsage) => sseUsageTap(true, onUsage), byteByByte(stream.all));
      expect(stripped).toEqual({ output: stream.withoutUsageChunk, reported: [REPORTED] });
    });
  });

  it.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
  ])(
    'keeps multi-byte characters whole when a chunk boundary falls inside one (%s), stripping or not',
    async (_label, eol) => {
      const stream = platformStream(eol, MULTIBYTE_WORDS);
      const broken: number[] = [];
      for (const at of everySplit(stream.all)) {
        const kept = await runTap((onUsage) => sseUsageTap(false, onUsage), splitAt(stream.all, at));
        const stripped = await runTap((onUsage) => sseUsageTap(true, onUsage), splitAt(stream.all, at));
        if (kept.output !== stream.all || stripped.output !== stream.withoutUsageChunk) broken.push(at);
        expect(kept.reported).toEqual([REPORTED]);
      }
      // Each listed byte position turned a character into U+FFFD on its way to the client.
      expect(broken).toEqual([]);
    },
  );

  it('reads usage from an event whose JSON spans several data lines', async () => {
    const json = JSON.stringify(usageOnly);
    const middle = json.indexOf('"usage"');
    const multiLine = `data: ${json.slice(0, middle)}\ndata: ${json.slice(middle)}\n\n${event('[DONE]')}`;
    const result = await runTap((onUsage) => sseUsageTap(false, onUsage), [Buffer.from(multiLine)]);
    expect(result).toEqual({ output: multiLine, reported: [REPORTED] });
  });

  it('keeps a chunk that carries usage and choices, reporting its usage, even when stripping', async () => {
    const both = event({ ...chunk('last'), usage: USAGE }) + event('[DONE]');
    const result = await runTap((onUsage) => sseUsageTap(true, onUsage), [Buffer.from(both)]);
    expect(result).toEqual({ output: both, reported: [REPORTED] });
  });

  it('passes malformed JSON through untouched, whether or not it mentions usage', async () => {
    const malformed = [
      'data: {"usage": {"prompt_tokens": 5,\n\n',
      'data: {"choices": [], "usage": \n\n',
      'data: not json at all\n\n',
      'data: {"choices":[],"usage":{"prompt_tokens":1}}}\n\n',
      ': a comment line\n\n',
      'event: ping\ndata: {}\n\n',
      event('[DONE]'),
    ].join('');
    for (const strip of [false, true]) {
      for (const at of everySplit(malformed)) {
        const result = await runTap((onUsage) => sseUsageTap(strip, onUsage), splitAt(malformed, at));
        expect(result, `strip ${strip}, split at byte ${at}`).toEqual({ output: malformed, reported: [] });
      }
    }
  });

  it('passes an unfinished last event through at the end of the stream', async () => {
    const unfinished = event(chunk('a')) + 'data: {"choices":[],"usage":{"prompt_tokens":1}';
    const result = await runTap((onUsage) => sseUsageTap(true, onUsage), splitAt(unfinished, 10));
    expect(result).toEqual({ output: unfinished, reported: [] });
  });

  it('removes the usage: null it asked for from content chunks, keeps it when not stripping, reports nothing', async () => {
    const nulls = event(chunk('a', null)) + event(chunk('b', null)) + event('[DONE]');
    const stripped = await runTap((onUsage) => sseUsageTap(true, onUsage), [Buffer.from(nulls)]);
    expect(stripped).toEqual({ output: event(chunk('a')) + event(chunk('b')) + event('[DONE]'), reported: [] });
    const kept = await runTap((onUsage) => sseUsageTap(false, onUsage), [Buffer.from(nulls)]);
    expect(kept).toEqual({ output: nulls, reported: [] });
  });

  it('counts odd usage values defensively: strings of digits, fractions truncated, negatives as 0', async () => {
    const odd = event({ choices: [], usage: { prompt_tokens: '12', completion_tokens: 2.9 } });
    const negative = event({ choices: [], usage: { prompt_tokens: -4, completion_tokens: 1 } });
    const nonsense = event({ choices: [], usage: { prompt_tokens: 'many', completion_tokens: 1 } });
    const result = await runTap((onUsage) => sseUsageTap(false, onUsage), [Buffer.from(odd + negative + nonsense)]);
    expect(result.reported).toEqual([
      { prompt_tokens: 12, completion_tokens: 2 },
      { prompt_tokens: 0, completion_tokens: 1 },
    ]);
    expect(result.output).toBe(odd + negative + nonsense);
  });

  it('passes each complete event on at once rather than holding the stream back', async () => {
    const tap = sseUsageTap(true, () => undefined);
    const first = event(chunk('first'));
    const received = once(tap, 'data');
    tap.write(Buffer.from(first + 'data: {"partial'));
    const [data] = (await received) as [Buffer];
    expect(data.toString('utf8')).toBe(first);
    tap.destroy();
  });
});

/** The JSON watcher listens beside the client; a PassThrough stands in for the platform's body. */
function jsonUsageTap(onUsage: (usage: TokenUsage) => void, limit?: number): Transform {
  const body = new PassThrough();
  watchJsonUsage(body, onUsage, limit);
  return body;
}

describe('watchJsonUsage', () => {
  const answer = JSON.stringify({
    id: 'chatcmpl-1',
    object: 'chat.completion',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Grüße — 🙂' }, finish_reason: 'stop' }],
    usage: USAGE,
  });

  it('passes a JSON answer through byte for byte and reports its usage, split at every byte position', async () => {
    for (const at of everySplit(answer)) {
      const result = await runTap((onUsage) => jsonUsageTap(onUsage), splitAt(answer, at));
      expect(result, `split at byte ${at}`).toEqual({ output: answer, reported: [REPORTED] });
    }
  });

  it('reports nothing for an answer without usage, or that is not JSON, and passes it through', async () => {
    for (const body of [JSON.stringify({ object: 'list', data: [] }), '{"usage": {"prompt_tokens": 3', 'plain text']) {
      const result = await runTap((onUsage) => jsonUsageTap(onUsage), [Buffer.from(body)]);
      expect(result).toEqual({ output: body, reported: [] });
    }
  });

  it('stops keeping a copy past its limit: the answer still passes through, usage is not read', async () => {
    const result = await runTap((onUsage) => jsonUsageTap(onUsage, 16), splitAt(answer, 10));
    expect(result).toEqual({ output: answer, reported: [] });
  });
});
