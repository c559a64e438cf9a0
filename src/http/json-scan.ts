import { HttpError } from '../errors.js';

/**
 * How deep a JSON body the gateway reads may nest. No API it fronts needs more than a few levels;
 * `JSON.parse` and `JSON.stringify` recurse per level, so a body of 500,000 `[` took seconds and a
 * stack overflow to refuse.
 */
export const MAX_JSON_DEPTH = 128;

/** One top-level member of a JSON object, by byte offsets into the whole body. */
export interface JsonMember {
  name: string;
  /** Offset of the value's first byte. */
  valueStart: number;
  /** Offset of the `,` or `}` after the value (whitespace before it belongs to the span). */
  valueEnd: number;
}

/** What a scan learnt about a body that is one JSON object. */
export interface JsonOutline {
  kind: 'object';
  /** Offset just after the object's `{`, where a member can be inserted. */
  bodyStart: number;
  /** Every member whose name was asked for, duplicates included, in order. */
  members: JsonMember[];
}

/**
 * What a scanned body is: one JSON object (outlined), some other complete value (or nothing), or
 * broken: unbalanced, mismatched, or followed by more than whitespace.
 */
export type JsonShape = JsonOutline | { kind: 'other' } | { kind: 'broken' };

// Bytes the scanner acts on.
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COLON = 0x3a;
const COMMA = 0x2c;

/** Where the scan is among the top-level object's members. */
const enum Member {
  /** Not inside the top-level object (before it, or the body is not one). */
  None,
  /** After `{`: a name or `}`. */
  NameOrEnd,
  /** After `,`: a name. */
  Name,
  /** Inside a member's name. */
  InName,
  Colon,
  ValueStart,
  /** Inside a value, until `,` or `}` at depth 1. */
  Value,
}

/** Names longer than this (escapes included) cannot be any the gateway looks for, so are not kept. */
const MAX_NAME_BYTES = 256;
/** A body repeating a name the gateway reads this often is an attack, not a request. */
const MAX_MEMBERS = 64;

/** A UTF-16 or UTF-32 body: a wide byte order mark, or a NUL among the first four bytes (RFC 4627 3). */
function startsLikeWideText(chunk: Buffer): boolean {
  if ((chunk[0] === 0xfe && chunk[1] === 0xff) || (chunk[0] === 0xff && chunk[1] === 0xfe)) return true;
  return chunk.subarray(0, 4).includes(0);
}

/** Strings this short are scanned byte by byte, longer ones searched natively. */
const SHORT_STRING = 32;

const isStructural = (byte: number) =>
  byte === QUOTE || byte === OPEN_OBJECT || byte === OPEN_ARRAY || byte === CLOSE_OBJECT || byte === CLOSE_ARRAY;

const isWhitespace = (byte: number) => byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;

/**
 * Reads a JSON body chunk by chunk as it arrives, without building it: tracks strings, escapes and
 * nesting, refuses nesting deeper than `maxDepth` at the byte that passes it, and notes where the
 * top-level members named in `names` are. The work per chunk is one pass over its bytes, so a body
 * of any size never blocks the event loop for longer than one chunk takes (a 64 KB chunk: ~0.1 ms);
 * only the few small values asked for are parsed afterwards.
 *
 * It is not a validator: values are delimited, not checked, so a body it outlines may still be
 * invalid JSON, which the platform's parser then refuses. It agrees with every JSON parser on where
 * strings, objects and members begin and end, which is all the gateway's checks rely on.
 */
export class JsonScanner {
  private offset = 0;
  private depth = 0;
  /** The brackets open, outermost first, to catch `[}`. */
  private readonly open: number[] = [];
  private inString = false;
  private escaped = false;
  private state = Member.None;
  /** What the body's top-level value is, once it has begun. */
  private topLevel: 'none' | 'object' | 'other' = 'none';
  /** The top-level container or string has ended: nothing but whitespace may follow. */
  private topLevelClosed = false;
  private malformed = false;
  private bodyStart = -1;
  /** Where the member name being read starts in the current chunk. */
  private nameStart = 0;
  /** The part of a member name that arrived in earlier chunks (rare: names are short). */
  private nameCarried?: Buffer;
  private current?: JsonMember;
  private readonly members: JsonMember[] = [];

  constructor(
    private readonly names: ReadonlySet<string>,
    private readonly maxDepth = MAX_JSON_DEPTH,
  ) {}

  /**
   * Scans the next chunk; throws a 400 `json_too_deep` once the nesting passes the limit, and a 400
   * `unsupported_encoding` for UTF-16 or UTF-32, which Python's json.loads reads but this scan cannot.
   */
  write(chunk: Buffer): void {
    if (this.offset === 0 && startsLikeWideText(chunk)) {
      throw new HttpError(400, 'unsupported_encoding', 'JSON request bodies must be UTF-8 (RFC 8259 8.1).');
    }
    // A byte order mark is not JSON (RFC 8259 8.1), but Python's json.loads skips one: so does the scan.
    const first = this.offset === 0 && chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf ? 3 : 0;
    for (let index = first; index < chunk.length; index += 1) {
      if (this.inString) {
        index = this.skipString(chunk, index);
        if (this.state === Member.InName && !this.inString) this.endName(chunk, index);
        continue;
      }
      const byte = chunk[index]!;
      // Inside nested values only strings and brackets matter: numbers and literals pass at once.
      if (this.depth > 1 && !isStructural(byte)) continue;
      if (!isWhitespace(byte)) this.byteOutsideString(byte, this.offset + index);
    }
    if (this.inString && this.state === Member.InName) this.carryName(chunk);
    this.offset += chunk.length;
  }

  /**
   * Most of a chat body is string contents: jumps to the quote that ends the string (found natively,
   * like memchr), checking the backslashes before it. Returns the index of the last byte consumed.
   */
  private skipString(chunk: Buffer, from: number): number {
    let index = from;
    if (this.escaped) {
      this.escaped = false;
      index += 1;
    }
    // Short strings end sooner than a native search starts up.
    for (const stop = Math.min(chunk.length, index + SHORT_STRING); index < stop; index += 1) {
      const byte = chunk[index];
      if (byte === BACKSLASH) {
        index += 1;
        if (index === chunk.length) {
          this.escaped = true;
          return index - 1;
        }
      } else if (byte === QUOTE) {
        this.inString = false;
        if (this.depth === 0) this.topLevelClosed = true;
        return index;
      }
    }
    for (;;) {
      const quote = chunk.indexOf(QUOTE, index);
      const end = quote === -1 ? chunk.length : quote;
      let backslashes = 0;
      while (end - backslashes - 1 >= index && chunk[end - backslashes - 1] === BACKSLASH) backslashes += 1;
      if (quote === -1) {
        // A string still open at the chunk's end; an odd run of backslashes escapes the next chunk's first byte.
        this.escaped = backslashes % 2 === 1;
        return chunk.length - 1;
      }
      if (backslashes % 2 === 0) {
        this.inString = false;
        if (this.depth === 0) this.topLevelClosed = true;
        return quote;
      }
      index = quote + 1;
    }
  }

  /** What the whole body turned out to be; call once every chunk was written. */
  end(): JsonShape {
    if (this.malformed || this.depth !== 0 || this.inString) return { kind: 'broken' };
    if (this.topLevel !== 'object') return { kind: 'other' };
    return { kind: 'object', bodyStart: this.bodyStart, members: this.members };
  }

  private byteOutsideString(byte: number, at: number): void {
    if (this.depth === 0) {
      // One value per body. A scalar has no end marker, but is no object either way.
      if (this.topLevelClosed) this.malformed = true;
      if (this.topLevel === 'none') this.topLevel = byte === OPEN_OBJECT ? 'object' : 'other';
    }
    if (this.depth === 1 && this.state !== Member.None) this.memberByte(byte, at);
    switch (byte) {
      case QUOTE:
        this.inString = true;
        return;
      case OPEN_OBJECT:
      case OPEN_ARRAY:
        this.depth += 1;
        if (this.depth > this.maxDepth) {
          throw new HttpError(
            400,
            'json_too_deep',
            `JSON nested deeper than ${this.maxDepth} levels is refused; no API behind this gateway needs it.`,
          );
        }
        this.open.push(byte);
        if (this.depth === 1 && byte === OPEN_OBJECT && this.bodyStart < 0) {
          this.bodyStart = at + 1;
          this.state = Member.NameOrEnd;
        }
        return;
      case CLOSE_OBJECT:
      case CLOSE_ARRAY:
        // `}` is `{` + 2 and `]` is `[` + 2: anything else closes what it did not open.
        if (this.depth === 0 || this.open.pop() !== byte - 2) {
          this.malformed = true;
          return;
        }
        this.depth -= 1;
        if (this.depth === 0) {
          this.state = Member.None;
          this.topLevelClosed = true;
        }
        return;
    }
  }

  /** Follows the members of the top-level object; called for every byte outside strings at depth 1. */
  private memberByte(byte: number, at: number): void {
    switch (this.state) {
      case Member.NameOrEnd:
      case Member.Name:
        if (byte === QUOTE) {
          this.state = Member.InName;
          this.nameStart = at - this.offset + 1;
          this.nameCarried = undefined;
        } else if (!(byte === CLOSE_OBJECT && this.state === Member.NameOrEnd)) this.malformed = true;
        return;
      case Member.Colon:
        if (byte === COLON) this.state = Member.ValueStart;
        else this.malformed = true;
        return;
      case Member.ValueStart:
        if (this.current) this.current.valueStart = at;
        this.state = Member.Value;
        if (byte === COMMA || byte === CLOSE_OBJECT) this.malformed = true;
        return;
      case Member.Value:
        if (byte !== COMMA && byte !== CLOSE_OBJECT) return;
        if (this.current) {
          this.current.valueEnd = at;
          this.current = undefined;
        }
        this.state = byte === COMMA ? Member.Name : Member.None;
        return;
      default:
        return;
    }
  }

  /** Keeps the start of a name still open at the end of a chunk; past MAX_NAME_BYTES, only its length matters. */
  private carryName(chunk: Buffer): void {
    const part = chunk.subarray(this.nameStart);
    const carried = this.nameCarried ? Buffer.concat([this.nameCarried, part]) : Buffer.from(part);
    this.nameCarried = carried.length > MAX_NAME_BYTES ? carried.subarray(0, MAX_NAME_BYTES + 1) : carried;
    this.nameStart = 0;
  }

  /** A member name ended at `quote` in this chunk: remember the member if its name is asked for. */
  private endName(chunk: Buffer, quote: number): void {
    this.state = Member.Colon;
    if (this.names.size === 0) return;
    const carried = this.nameCarried;
    this.nameCarried = undefined;
    const length = (carried?.length ?? 0) + quote - this.nameStart;
    if (length > MAX_NAME_BYTES) return;
    const raw = carried
      ? Buffer.concat([carried, chunk.subarray(this.nameStart, quote)]).toString('utf8')
      : chunk.toString('utf8', this.nameStart, quote);
    let name = raw;
    // An escaped name (`"mod\u0065l"`) is the same name to the platform's parser.
    if (raw.includes('\\')) {
      try {
        name = JSON.parse(`"${raw}"`) as string;
      } catch {
        this.malformed = true;
        return;
      }
    }
    if (!this.names.has(name)) return;
    if (this.members.length >= MAX_MEMBERS) {
      throw new HttpError(400, 'repeated_field', `The request body repeats "${name}" more than ${MAX_MEMBERS} times.`);
    }
    this.current = { name, valueStart: -1, valueEnd: -1 };
    this.members.push(this.current);
  }
}
