import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { MAX_TARGET_LENGTH, compilePathRules, matchesAny, normalisePath } from '../../src/policy/paths.js';

/** The normalised path, failing the test if it was refused. */
function normalised(target: string): string {
  const result = normalisePath(target);
  if (!result.ok) throw new Error(`${target} was refused: ${result.reason}`);
  return result.path;
}

const refusal = (target: string) => {
  const result = normalisePath(target);
  return result.ok ? `accepted as ${result.path}` : result.reason;
};

describe('normalisePath', () => {
  it('leaves a plain path as it is, case included', () => {
    expect(normalised('/v1/chat/completions')).toBe('/v1/chat/completions');
    expect(normalised('/ADMIN')).toBe('/ADMIN');
    expect(normalised('/')).toBe('/');
  });

  it('drops the query, dot segments and all', () => {
    expect(normalised('/v1/models?limit=10')).toBe('/v1/models');
    expect(normalised('/public?x=/../../admin#y')).toBe('/public');
    expect(normalised('/health?')).toBe('/health');
  });

  it('collapses repeated slashes', () => {
    expect(normalised('/v1//models')).toBe('/v1/models');
    expect(normalised('//admin')).toBe('/admin');
    expect(normalised('///')).toBe('/');
  });

  it('resolves dot segments, plain or percent-encoded', () => {
    expect(normalised('/v1/./models')).toBe('/v1/models');
    expect(normalised('/public/../admin')).toBe('/admin');
    expect(normalised('/public/%2e%2e/admin')).toBe('/admin');
    expect(normalised('/public/%2E%2e/admin')).toBe('/admin');
    expect(normalised('/public/.%2e/admin')).toBe('/admin');
    expect(normalised('/public/%2e/admin')).toBe('/public/admin');
  });

  it('keeps a trailing slash, also where dot segments leave a directory', () => {
    expect(normalised('/admin/')).toBe('/admin/');
    expect(normalised('/a/b/.')).toBe('/a/b/');
    expect(normalised('/a/b/c/..')).toBe('/a/b/');
    expect(normalised('/a/..')).toBe('/');
  });

  it('strips ;parameters from every segment, so ..; is a dot segment (the Tomcat bypass)', () => {
    expect(normalised('/public/..;/admin')).toBe('/admin');
    expect(normalised('/public;/../admin')).toBe('/admin');
    expect(normalised('/admin;x=1')).toBe('/admin');
    expect(normalised('/;x=1/admin;jsessionid=abc/users')).toBe('/admin/users');
    expect(normalised('/public/%2e%2e;x/admin')).toBe('/admin');
  });

  it('decodes escapes once, into UTF-8', () => {
    expect(normalised('/v1/models/caf%C3%A9')).toBe('/v1/models/café');
    expect(normalised('/a%20b')).toBe('/a b');
    expect(normalised('/what%3F')).toBe('/what?');
  });

  it('refuses a target that is not a path', () => {
    for (const target of ['', '*', 'admin', 'http://llm.example.com/admin', '?/admin']) {
      expect(refusal(target), target).toBe('the request path does not start with /');
    }
  });

  it('refuses .. that climbs above the root', () => {
    for (const target of ['/..', '/../admin', '/a/../../admin', '/%2e%2e/admin', '/..;/admin']) {
      expect(refusal(target), target).toBe('the request path climbs above / with ..');
    }
  });

  it('refuses an encoded slash, backslash, semicolon or hash inside a segment', () => {
    for (const target of [
      '/public%2F..%2Fadmin',
      '/public%2f..',
      '/public%5C..%5Cadmin',
      '/admin%3Bx',
      '/public%23/../admin',
    ]) {
      expect(refusal(target), target).toBe(
        'the request path has an escape that decodes to /, \\, ;, # or a control character',
      );
    }
  });

  it('refuses encoded control characters, NUL included', () => {
    for (const target of ['/admin%00.html', '/a%0d%0aX-Injected:%201', '/a%7f', '/a%C2%85']) {
      expect(refusal(target), target).toBe(
        'the request path has an escape that decodes to /, \\, ;, # or a control character',
      );
    }
  });

  it('refuses raw characters no valid request target holds', () => {
    for (const target of ['/a b', '/a\tb', '/a\\..\\admin', '/a#frag', '/caf\u00e9', '/a\u0000', '/a\r\nHost: x']) {
      expect(refusal(target), JSON.stringify(target)).toBe(
        'the request path contains a space, control, non-ASCII, \\ or # character',
      );
    }
  });

  it('refuses malformed percent-escapes', () => {
    for (const target of ['/a%', '/a%2', '/a%zz', '/a%%32e', '/%u002e%u002e/admin']) {
      expect(refusal(target), target).toBe('the request path contains a malformed percent-escape');
    }
  });

  it('refuses escapes that are not UTF-8, overlong encodings of . and / included', () => {
    for (const target of ['/a%ff', '/a%C3', '/%c0%ae%c0%ae/admin', '/a%c0%af', '/a%e0%80%ae', '/a%ED%A0%80']) {
      expect(refusal(target), target).toBe('the request path has percent-escapes that are not UTF-8');
    }
  });

  it('refuses double encoding, which a server that decodes twice would read as another path', () => {
    for (const target of ['/public/%252e%252e/admin', '/a%252Fb', '/%25%32%65']) {
      expect(refusal(target), target).toBe('the request path is percent-encoded twice');
    }
    expect(normalised('/100%25')).toBe('/100%');
  });

  it('refuses an overlong path, but not a long query', () => {
    expect(refusal(`/${'a'.repeat(MAX_TARGET_LENGTH)}`)).toBe(
      `the request path is longer than ${MAX_TARGET_LENGTH} characters`,
    );
    expect(refusal(`/${'/'.repeat(MAX_TARGET_LENGTH)}admin`)).toBe(
      `the request path is longer than ${MAX_TARGET_LENGTH} characters`,
    );
    expect(normalised(`/${'a'.repeat(MAX_TARGET_LENGTH - 1)}`)).toHaveLength(MAX_TARGET_LENGTH);
    expect(normalised(`/v1/models?q=${'a'.repeat(MAX_TARGET_LENGTH)}`)).toBe('/v1/models');
  });

  it('gives a path with no empty, dot or ;parameter segment left to interpret (property)', () => {
    const segment = fc.oneof(
      fc.constantFrom(
        '',
        '.',
        '..',
        '%2e',
        '%2e%2e',
        '..;',
        ';x',
        'admin',
        'a;b=c',
        '%41',
        '%2F',
        '%25',
        '%00',
        '%c0%ae',
      ),
      fc.string({ maxLength: 6 }),
    );
    const target = fc.array(segment, { maxLength: 8 }).map((segments) => `/${segments.join('/')}`);
    fc.assert(
      fc.property(target, (raw) => {
        const result = normalisePath(raw);
        if (!result.ok) return;
        expect(result.path.startsWith('/')).toBe(true);
        expect(result.path).not.toMatch(/\/\/|(^|\/)\.\.?(\/|$)|;|[\\#\p{Cc}]/u);
        const encoded = result.path.split('/').map(encodeURIComponent).join('/');
        expect(normalisePath(encoded)).toEqual(result);
      }),
    );
  });

  it('never throws, whatever the target (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (raw) => {
        expect(typeof normalisePath(`/${raw}`).ok).toBe('boolean');
      }),
    );
  });
});

describe('compilePathRules and matchesAny', () => {
  it('uses each pattern as written, so an unanchored one matches anywhere', () => {
    const rules = compilePathRules(['^/health$', 'metrics'], { caseInsensitive: false });
    expect(matchesAny('/health', rules)).toBe(true);
    expect(matchesAny('/health/x', rules)).toBe(false);
    expect(matchesAny('/v1/metrics-export', rules)).toBe(true);
    expect(matchesAny('/v1/models', rules)).toBe(false);
  });

  it('matches case-sensitively for public paths: /PUBLIC is not public', () => {
    const rules = compilePathRules(['^/public(/|$)'], { caseInsensitive: false });
    expect(matchesAny(normalised('/public/logo.png'), rules)).toBe(true);
    expect(matchesAny(normalised('/PUBLIC/logo.png'), rules)).toBe(false);
  });

  it('matches case-insensitively for admin paths: /ADMIN is still admin', () => {
    const rules = compilePathRules(['^/admin(/|$)'], { caseInsensitive: true });
    expect(matchesAny(normalised('/ADMIN'), rules)).toBe(true);
    expect(matchesAny(normalised('/Admin/users'), rules)).toBe(true);
    expect(matchesAny(normalised('/administrator'), rules)).toBe(false);
    expect(compilePathRules(['^/admin'], { caseInsensitive: false }).some((rule) => rule.test('/ADMIN'))).toBe(false);
  });

  it('sees through the bypasses a gateway rule must not miss', () => {
    const admin = compilePathRules(['^/admin(/|$)'], { caseInsensitive: true });
    const bypasses = [
      '/public/../admin',
      '/public/%2e%2e/admin',
      '/public/..;/admin',
      '//admin',
      '/./admin',
      '/admin;x=1',
      '/admin/',
      '/ADMIN?x',
    ];
    for (const target of bypasses) expect(matchesAny(normalised(target), admin), target).toBe(true);
  });

  it('compiles with the u flag, so syntax is strict and . is a whole character', () => {
    const rules = compilePathRules(['^/caf.$'], { caseInsensitive: false });
    expect(rules[0]?.flags).toBe('u');
    expect(matchesAny('/caf\u{1F600}', rules)).toBe(true);
    expect(() => compilePathRules(['\\-'], { caseInsensitive: false })).toThrow(ConfigError);
  });

  it('rejects an invalid pattern with a ConfigError naming the key and index', () => {
    expect(() => compilePathRules(['^/ok$', '('], { caseInsensitive: false, key: 'gateway.public_paths' })).toThrow(
      'gateway.public_paths[1] is not a valid regular expression: Invalid regular expression: /(/u: Unterminated group',
    );
    expect(() => compilePathRules(['(?i)admin'], { caseInsensitive: true })).toThrow(
      /^path rule\[0\] is not a valid regular expression/,
    );
  });

  it('matches nothing with no rules', () => {
    expect(matchesAny('/anything', [])).toBe(false);
  });
});
