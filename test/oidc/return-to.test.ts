import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { safeReturnTo } from '../../src/oidc/return-to.js';
import { Browserless } from '../support/browserless.js';
import { signIn } from '../support/sign-in.js';
import { startFaultyStack, type FaultyStack } from '../support/stack.js';

const GATEWAY_ORIGIN = 'https://gateway.example';

/**
 * Where a browser lands when the value is used as a Location header on the gateway. The WHATWG URL
 * parser is the one browsers use: it reads `\` as `/`, drops tabs and newlines, resolves dot segments.
 */
function landsOn(location: string): string {
  return new URL(location, `${GATEWAY_ORIGIN}/v1/auth/auth`).origin;
}

/** Each would send the browser off the gateway if it were used as-is, or is not a path at all. */
const hostile: [label: string, value: unknown][] = [
  ['a protocol-relative URL', '//evil.com'],
  ['a slash then a backslash', '/\\evil.com'],
  ['a double backslash', '\\\\evil.com'],
  ['a backslash then a slash', '\\/evil.com'],
  ['an absolute https URL', 'https://evil.com'],
  ['an absolute URL in upper case', 'HTTPS://EVIL.COM'],
  ['a scheme without slashes', 'http:evil.com'],
  ['a javascript: URL', 'javascript:alert(1)'],
  ['a data: URL', 'data:text/html,<script>alert(1)</script>'],
  ['an encoded double slash after a slash', '/%2F%2Fevil.com'],
  ['a lower-case encoded double slash', '/%2f%2fevil.com'],
  ['an encoded backslash after a slash', '/%5Cevil.com'],
  ['an encoded double slash without a leading slash', '%2F%2Fevil.com'],
  ['a tab between the slashes', '/\t/evil.com'],
  ['a newline between the slashes', '/\n/evil.com'],
  ['a CR LF between the slashes', '/\r\n/evil.com'],
  ['a leading space', ' //evil.com'],
  ['a NUL between the slashes', '/\u0000/evil.com'],
  ['a DEL between the slashes', '/\u007f/evil.com'],
  ['an encoded tab between the slashes', '/%09/evil.com'],
  ['an encoded CR LF before a double slash', '/%0d%0a//evil'],
  ['an encoded NUL', '/%00//evil.com'],
  ['a protocol-relative URL with an encoded dot-dot', '//evil.com%2F..'],
  ['a triple slash', '///evil.com'],
  ['a host hidden before userinfo', '//evil.com@good.example'],
  ['fullwidth solidi', '／／evil.com'],
  ['an ideographic space between the slashes', '/\u3000/evil'],
  ['a no-break space between the slashes', '/\u00a0/evil'],
  ['a line separator between the slashes', '/\u2028/evil'],
  ['a byte order mark before a double slash', '/\ufeff//evil'],
  ['a right-to-left override before a double slash', '\u202e//evil.com'],
  ['a malformed percent escape', '/%E0%A4%A'],
  ['a lone percent sign', '/%'],
  ['a 10,000-character path', `/${'a'.repeat(10_000)}`],
  ['an empty string', ''],
  ['a query without a path', '?x=1'],
  ['a fragment without a path', '#frag'],
  ['a bare host name', 'evil.com'],
  ['a relative path', 'v1/models'],
  ['a number', 42],
  ['null', null],
  ['undefined', undefined],
  ['an object', { path: '/v1/models' }],
  ['an array from a repeated query parameter', ['/v1/models', '//evil.com']],
  ['a String object', new String('/v1/models')],
];

/** Start on the origin but reach another host once dot segments are resolved. */
const dotSegmentEscapes: [label: string, value: string][] = [
  ['a dot segment before a double slash', '/.//evil.com'],
  ['a dot-dot segment before a double slash', '/..//evil.com'],
  ['a path climbing above the root', '/a/../..//evil.com'],
  ['an encoded dot-dot before a double slash', '/%2e%2e//evil.com'],
  ['an encoded dot before a double slash', '/%2e//evil.com'],
  // Found by the fuzz suite: resolving left `/%2f`, which decodes to `//`.
  ['a dot-dot segment before an encoded slash', '/../%2f'],
  ['a dot segment before an encoded slash and a host', '/./%2fevil.com'],
];

/** Odd-looking but on the gateway's origin, so they are kept exactly. */
const kept: string[] = [
  '/',
  '/v1/models',
  '/v1/models?x=1&y=2',
  '/a/b#c',
  '/search?q=hello%20world',
  '/search?q=a+b&q=c',
  '/caf%C3%A9',
  '/a//b',
  '/%252F%252Fevil.com',
  '/next?to=//evil.com',
  '/next?to=https%3A%2F%2Fevil.com',
  '/v1/auth/account#keys',
];

describe('safeReturnTo', () => {
  it.each(hostile)('falls back to / for %s', (_label, value) => {
    expect(safeReturnTo(value)).toBe('/');
  });

  it.each(dotSegmentEscapes)('falls back to / for %s', (_label, value) => {
    expect(safeReturnTo(value)).toBe('/');
  });

  it.each(kept)('keeps %s exactly', (value) => {
    expect(safeReturnTo(value)).toBe(value);
  });

  it('never returns a value a browser would resolve to another origin', () => {
    const everything = [...hostile.map(([, value]) => value), ...dotSegmentEscapes.map(([, value]) => value), ...kept];
    const leaving = everything
      .map((value) => ({ value, result: safeReturnTo(value) }))
      .filter(({ result }) => landsOn(result) !== GATEWAY_ORIGIN);
    expect(leaving).toEqual([]);
  });

  it('always returns a path that starts with exactly one slash', () => {
    for (const [, value] of [...hostile, ...dotSegmentEscapes]) {
      expect(safeReturnTo(value)).toMatch(/^\/(?![/\\])/);
    }
  });
});

describe('return_to through a real sign-in', () => {
  let stack: FaultyStack;
  beforeAll(async () => {
    stack = await startFaultyStack();
  });
  afterAll(() => stack.close());

  it('lands on / when return_to is protocol-relative', async () => {
    const { callback } = await signIn(stack, new Browserless(), '//evil.com');
    expect(callback.status).toBe(302);
    expect(callback.headers.get('location')).toBe('/');
  });

  it('lands on / when return_to escapes through a dot segment', async () => {
    const { callback } = await signIn(stack, new Browserless(), '/.//evil.com');
    expect(callback.status).toBe(302);
    expect(callback.headers.get('location')).toBe('/');
  });

  it('lands on a local return_to with its query kept', async () => {
    const { callback } = await signIn(stack, new Browserless(), '/v1/models?x=1');
    expect(callback.status).toBe(302);
    expect(callback.headers.get('location')).toBe('/v1/models?x=1');
  });

  it('brings a browser sent to sign in back to the page it first asked for', async () => {
    const browser = new Browserless();
    const asked = '/v1/models?x=1&x=2&q=hello%20world';
    const challenge = await browser.fetch(`${stack.url}${asked}`, { headers: { accept: 'text/html' } });
    expect(challenge.status).toBe(302);
    const { visited } = await browser.follow(new URL(challenge.headers.get('location')!, stack.url).href, {}, 4);
    expect(visited.at(-1)).toBe(`${stack.url}${asked}`);
  });
});
