import { describe, expect, it } from 'vitest';
import { JsonScanner, MAX_JSON_DEPTH, type JsonShape } from '../../src/http/json-scan.js';

const NAMES = new Set(['model', 'model_name', 'stream', 'stream_options']);

/** Scans `text` in chunks of `size` bytes, as a body arrives from the socket. */
function scan(text: string | Buffer, size = 3): JsonShape {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const scanner = new JsonScanner(NAMES);
  for (let at = 0; at < bytes.length; at += size) scanner.write(bytes.subarray(at, at + size));
  return scanner.end();
}

/** The members found, each as its name and its value parsed from the byte span. */
function members(text: string, size = 3): Array<[string, unknown]> {
  const shape = scan(text, size);
  if (shape.kind !== 'object') throw new Error(`not an object: ${shape.kind}`);
  const bytes = Buffer.from(text);
  return shape.members.map((member) => [
    member.name,
    JSON.parse(bytes.toString('utf8', member.valueStart, member.valueEnd)),
  ]);
}

describe('JsonScanner', () => {
  it('finds the asked-for top-level members and their values, duplicates and escaped names included', () => {
    const text =
      '{ "messages": [{"model": "nested", "stream": true}], "model" : "a" ,"str\\u0065am":1,' +
      '"x":"\\"model\\": \\"b\\"", "stream_options": {"include_usage": false}, "model":"c"}';
    for (const size of [1, 2, 7, 1024]) {
      expect(members(text, size)).toEqual([
        ['model', 'a'],
        ['stream', 1],
        ['stream_options', { include_usage: false }],
        ['model', 'c'],
      ]);
    }
  });

  it('agrees with JSON.parse on the top-level names of generated bodies', () => {
    const pieces = ['"s"', '1', 'true', 'null', '[1,{"model":"n"}]', '{"stream":true}', '"\\\\"', '"a\\"b"'];
    for (let seed = 0; seed < 300; seed += 1) {
      const entries: string[] = [];
      const expected: Array<[string, unknown]> = [];
      for (let index = 0; index < 1 + (seed % 6); index += 1) {
        const name = ['model', 'stream', 'other', 'model_name', 'stream_options'][(seed + index * 7) % 5]!;
        const value = pieces[(seed * 3 + index) % pieces.length]!;
        entries.push(`${JSON.stringify(name)}:${value}`);
        if (NAMES.has(name)) expected.push([name, JSON.parse(value)]);
      }
      const text = `{${entries.join(seed % 2 ? ', ' : ',')}}`;
      JSON.parse(text);
      expect(members(text, 1 + (seed % 5)), text).toEqual(expected);
    }
  });

  it('tells an object from other JSON and from broken JSON', () => {
    for (const text of ['[]', '"model"', '42', 'null', '', '  ', '[{"model":"a"}]'])
      expect(scan(text).kind, text).toBe('other');
    for (const text of [
      '{"model": "a",',
      '{"a":1}}',
      '{"a":1} {"b":2}',
      '{"a" 1}',
      '{"a":1,}',
      '{a:1}',
      '[}',
      '{"a":"1}',
    ]) {
      expect(scan(text).kind, text).toBe('broken');
    }
    expect(scan('\ufeff{"model":"a"}').kind).toBe('object');
  });

  it(`refuses nesting deeper than ${MAX_JSON_DEPTH} at the byte that passes it, in strings not counted`, () => {
    expect(scan('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH)).kind).toBe('other');
    expect(scan(`{"a":"${'['.repeat(10_000)}"}`).kind).toBe('object');
    const scanner = new JsonScanner(NAMES);
    const deep = Buffer.from('['.repeat(MAX_JSON_DEPTH + 1));
    expect(() => scanner.write(deep)).toThrow(expect.objectContaining({ status: 400, code: 'json_too_deep' }));
    expect(() => scan('{"a":' + '{"b":'.repeat(MAX_JSON_DEPTH))).toThrow(/nested deeper than 128/);
  });

  it('refuses UTF-16 and UTF-32 bodies, which Python reads as JSON and the scan cannot', () => {
    for (const encoding of ['utf16le', 'ucs2'] as const) {
      expect(() => scan(Buffer.from('{"stream":true}', encoding))).toThrow(
        expect.objectContaining({ code: 'unsupported_encoding' }),
      );
    }
    expect(() => scan(Buffer.from([0xfe, 0xff, 0, 0x7b]))).toThrow(/UTF-8/);
  });

  it('refuses a body repeating a name it reads more than 64 times', () => {
    expect(() => scan(`{${Array(65).fill('"model":"a"').join(',')}}`, 4096)).toThrow(
      expect.objectContaining({ code: 'repeated_field' }),
    );
  });

  // Escaped quotes are the scanner's worst case. Its time is printed, not asserted (a loaded
  // machine is no measure); what is asserted is that the scan still finds what follows them.
  it('finds the member after 64 KB chunks of its worst case (escaped quotes)', () => {
    const text = JSON.stringify({ messages: [{ content: 'x "y" '.repeat(11_000) }], model: 'after' });
    const started = performance.now();
    expect(members(text, 65_536)).toEqual([['model', 'after']]);
    console.log(`json-scan: ${(performance.now() - started).toFixed(3)} ms for ${text.length} bytes of escaped quotes`);
  });
});
