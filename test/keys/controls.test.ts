import { describe, expect, it } from 'vitest';
import { loadConfigFromObject } from '../../src/config/index.js';
import { HttpError } from '../../src/errors.js';
import {
  assertNoWiderThan,
  missingScope,
  parseControls,
  type ControlCaps,
  type KeyControls,
  type Scope,
  type ScopeRules,
} from '../../src/keys/controls.js';
import { compilePathRules } from '../../src/policy/paths.js';
import { MINIMAL } from '../config/fixtures.js';

const UNCAPPED: ControlCaps = { maxRequestsPerMinute: 0, maxTokensPerMinute: 0 };
const CAPPED: ControlCaps = { maxRequestsPerMinute: 100, maxTokensPerMinute: 10_000 };

/** The scope mapping shipped in config/llama_config.yaml, compiled as the gateway compiles it. */
function shippedScopeRules(): ScopeRules {
  const { scope_paths: paths } = loadConfigFromObject(MINIMAL, 'controls.test').auth;
  return {
    inference: compilePathRules(paths.inference, { caseInsensitive: false }),
    training: compilePathRules(paths.training, { caseInsensitive: false }),
  };
}

/** The HttpError `parse` throws, failing the test when it throws nothing or something else. */
function refusal(parse: () => unknown): HttpError {
  try {
    parse();
  } catch (error) {
    expect(error).toBeInstanceOf(HttpError);
    return error as HttpError;
  }
  throw new Error('expected parseControls to refuse the input');
}

describe('parseControls', () => {
  it('gives a key with no controls every scope, any model and the configured default limits', () => {
    expect(parseControls({}, UNCAPPED)).toEqual({
      scopes: ['all'],
      models: null,
      requests_per_minute: null,
      tokens_per_minute: null,
    });
    expect(parseControls({ models: null, requests_per_minute: null, tokens_per_minute: null }, UNCAPPED)).toEqual(
      parseControls({}, UNCAPPED),
    );
  });

  it('keeps what was asked for, with repeated scopes once', () => {
    expect(
      parseControls(
        {
          scopes: ['inference', 'read', 'inference'],
          models: ['demo-small', 'demo-large'],
          requests_per_minute: 5,
          tokens_per_minute: 30,
        },
        UNCAPPED,
      ),
    ).toEqual({
      scopes: ['inference', 'read'],
      models: ['demo-small', 'demo-large'],
      requests_per_minute: 5,
      tokens_per_minute: 30,
    });
  });

  const badScopes: Array<[string, unknown]> = [
    ['an empty list', []],
    ['an unknown scope', ['inference', 'superuser']],
    ['a scope in another case', ['Inference']],
    ['a string instead of a list', 'inference'],
    ['a number in the list', [1]],
    ['null', null],
    ['an object', { inference: true }],
  ];
  it.each(badScopes)('refuses scopes given as %s: 400 invalid_scopes naming the valid ones', (_label, scopes) => {
    const error = refusal(() => parseControls({ scopes }, UNCAPPED));
    expect(error.status).toBe(400);
    expect(error.code).toBe('invalid_scopes');
    expect(error.message).toContain('inference, training, read, all, keys, admin');
  });

  const badModels: Array<[string, unknown]> = [
    ['an empty list', []],
    ['101 models', Array.from({ length: 101 }, (_, i) => `model-${i}`)],
    ['an empty name', ['demo-small', '']],
    ['a name of 201 characters', ['m'.repeat(201)]],
    ['a number', [7]],
    ['a string instead of a list', 'demo-small'],
    ['an object', { 'demo-small': true }],
  ];
  it.each(badModels)('refuses models given as %s: 400 invalid_models', (_label, models) => {
    const error = refusal(() => parseControls({ models }, UNCAPPED));
    expect(error.status).toBe(400);
    expect(error.code).toBe('invalid_models');
  });

  it('accepts 100 models and names of 200 characters', () => {
    const hundred = Array.from({ length: 100 }, (_, i) => `model-${i}`);
    expect(parseControls({ models: hundred }, UNCAPPED).models).toEqual(hundred);
    expect(parseControls({ models: ['m'.repeat(200)] }, UNCAPPED).models).toEqual(['m'.repeat(200)]);
  });

  const badLimits: Array<[string, unknown]> = [
    ['zero', 0],
    ['a negative number', -1],
    ['a fraction', 1.5],
    ['a numeric string', '10'],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['a boolean', true],
  ];
  describe.each(['requests_per_minute', 'tokens_per_minute'] as const)('%s', (name) => {
    it.each(badLimits)(`refuses %s: 400 invalid_${name}`, (_label, value) => {
      const error = refusal(() => parseControls({ [name]: value }, UNCAPPED));
      expect(error.status).toBe(400);
      expect(error.code).toBe(`invalid_${name}`);
    });

    it('accepts any whole number of at least 1 when the operator set no cap', () => {
      expect(parseControls({ [name]: 1 }, UNCAPPED)[name]).toBe(1);
      expect(parseControls({ [name]: 1_000_000_000 }, UNCAPPED)[name]).toBe(1_000_000_000);
    });

    it('accepts the cap itself and refuses one more: 400 naming the cap', () => {
      const cap = name === 'requests_per_minute' ? CAPPED.maxRequestsPerMinute : CAPPED.maxTokensPerMinute;
      expect(parseControls({ [name]: cap }, CAPPED)[name]).toBe(cap);
      const error = refusal(() => parseControls({ [name]: cap + 1 }, CAPPED));
      expect(error.status).toBe(400);
      expect(error.code).toBe(`${name}_too_high`);
      expect(error.message).toContain(String(cap));
    });

    // KeyControls documents null as "the configured default"; a cap bounds what a user may ask for,
    // it does not replace the operator's default (auth.key_requests_per_minute / key_tokens_per_minute).
    it('leaves an absent limit to the configured default (null) when a cap is set', () => {
      expect(parseControls({}, CAPPED)[name]).toBeNull();
    });
  });
});

describe('missingScope with the shipped auth.scope_paths', () => {
  const rules = shippedScopeRules();

  // [scopes, method, path, scope needed or undefined when allowed]
  const table: Array<[Scope[], string, string, Scope | undefined]> = [
    // `all` opens everything, whatever the method.
    [['all'], 'POST', '/v1/train', undefined],
    [['all'], 'DELETE', '/anything/else', undefined],
    [['all', 'read'], 'PUT', '/echo/x', undefined],
    // `inference` opens the inference paths with any method.
    [['inference'], 'POST', '/v1/chat/completions', undefined],
    [['inference'], 'POST', '/v1/completions', undefined],
    [['inference'], 'POST', '/v1/embeddings', undefined],
    [['inference'], 'GET', '/v1/models', undefined],
    [['inference'], 'GET', '/v1/models/demo-small', undefined],
    [['inference'], 'POST', '/inf', undefined],
    [['inference'], 'POST', '/inf/generate', undefined],
    [['inference'], 'POST', '/v2/completions', undefined],
    [['inference'], 'POST', '/v3/streaming_completions', undefined],
    [['inference'], 'POST', '/v1/batch_completions', undefined],
    // ...and only those: anchored patterns do not open look-alikes.
    [['inference'], 'POST', '/v1/chat/completions/extra', 'all'],
    [['inference'], 'POST', '/x/v1/chat/completions', 'all'],
    [['inference'], 'GET', '/v1/modelsx', 'read'],
    [['inference'], 'POST', '/information', 'all'],
    [['inference'], 'POST', '/v1/train', 'training'],
    [['inference'], 'GET', '/v1/files', 'training'],
    [['inference'], 'GET', '/echo/x', 'read'],
    [['inference'], 'HEAD', '/echo/x', 'read'],
    [['inference'], 'POST', '/echo/x', 'all'],
    [['inference'], 'OPTIONS', '/echo/x', 'all'],
    // Paths are matched case-sensitively: another case is not an inference path.
    [['inference'], 'POST', '/V1/CHAT/COMPLETIONS', 'all'],
    // `training` opens the training paths with any method.
    [['training'], 'POST', '/v1/train', undefined],
    [['training'], 'POST', '/v1/tune/jobs', undefined],
    [['training'], 'POST', '/v1/fine_tuning/jobs', undefined],
    [['training'], 'PUT', '/v1/data/set-1', undefined],
    [['training'], 'DELETE', '/v1/files/file-1', undefined],
    [['training'], 'GET', '/v1/files', undefined],
    [['training'], 'POST', '/v1/chat/completions', 'inference'],
    [['training'], 'GET', '/v1/models', 'inference'],
    [['training'], 'GET', '/echo/x', 'read'],
    [['training'], 'PATCH', '/echo/x', 'all'],
    // `read` opens GET and HEAD anywhere, nothing else.
    [['read'], 'GET', '/echo/x', undefined],
    [['read'], 'HEAD', '/echo/x', undefined],
    [['read'], 'GET', '/v1/models', undefined],
    [['read'], 'GET', '/v1/files/file-1', undefined],
    [['read'], 'POST', '/v1/chat/completions', 'inference'],
    [['read'], 'DELETE', '/v1/files/file-1', 'training'],
    [['read'], 'POST', '/echo/x', 'all'],
    [['read'], 'PUT', '/echo/x', 'all'],
    [['read'], 'OPTIONS', '/echo/x', 'all'],
    // Several scopes: their union.
    [['inference', 'training'], 'POST', '/v1/chat/completions', undefined],
    [['inference', 'training'], 'POST', '/v1/fine_tuning/jobs', undefined],
    [['inference', 'training'], 'GET', '/echo/x', 'read'],
    [['inference', 'read'], 'GET', '/v1/files', undefined],
    [['inference', 'read'], 'POST', '/v1/files', 'training'],
  ];

  it.each(table)('%j %s %s needs %s', (scopes, method, path, needed) => {
    expect(missingScope(scopes, method, path, rules)).toBe(needed);
  });

  it('follows the configured mapping, not built-in paths', () => {
    const custom: ScopeRules = {
      inference: compilePathRules(['^/generate$'], { caseInsensitive: false }),
      training: compilePathRules(['^/learn(/|$)'], { caseInsensitive: false }),
    };
    expect(missingScope(['inference'], 'POST', '/generate', custom)).toBeUndefined();
    expect(missingScope(['inference'], 'POST', '/v1/chat/completions', custom)).toBe('all');
    expect(missingScope(['training'], 'POST', '/learn/run', custom)).toBeUndefined();
    expect(missingScope(['training'], 'POST', '/v1/train', custom)).toBe('all');
    expect(missingScope(['training'], 'POST', '/generate', custom)).toBe('inference');
  });

  it('opens nothing but GET and HEAD to read when no paths are mapped', () => {
    const empty: ScopeRules = { inference: [], training: [] };
    expect(missingScope(['inference', 'training'], 'POST', '/v1/chat/completions', empty)).toBe('all');
    expect(missingScope(['inference', 'training'], 'GET', '/v1/models', empty)).toBe('read');
    expect(missingScope(['read'], 'GET', '/v1/models', empty)).toBeUndefined();
  });
});

describe('the keys and admin scopes', () => {
  const rules = shippedScopeRules();
  it('opens no platform path with "keys" or "admin" alone, and "all" does not include them', () => {
    for (const scopes of [['keys'], ['admin'], ['keys', 'admin']] as Scope[][]) {
      expect(missingScope(scopes, 'GET', '/v1/models', rules)).toBeDefined();
      expect(missingScope(scopes, 'POST', '/v1/chat/completions', rules)).toBeDefined();
    }
    expect(missingScope(['all'], 'POST', '/v1/chat/completions', rules)).toBeUndefined();
  });

  const controls = (overrides: Partial<KeyControls>): KeyControls => ({
    scopes: ['all'],
    models: null,
    requests_per_minute: null,
    tokens_per_minute: null,
    ...overrides,
  });
  const widerRefusal = (holder: KeyControls, granted: KeyControls) => {
    try {
      assertNoWiderThan(holder, granted);
    } catch (error) {
      return (error as HttpError).code;
    }
    return undefined;
  };

  it('lets a key grant only what it holds: scopes ("all" covering the platform ones), models, limits', () => {
    const holder = controls({ scopes: ['keys', 'all'], models: ['m1', 'm2'], requests_per_minute: 10 });
    expect(widerRefusal(holder, controls({ scopes: ['inference'], models: ['m1'], requests_per_minute: 5 }))).toBe(
      undefined,
    );
    expect(widerRefusal(holder, controls({ scopes: ['admin'], models: ['m1'], requests_per_minute: 5 }))).toBe(
      'scope_not_held',
    );
    expect(widerRefusal(holder, controls({ models: null, requests_per_minute: 5 }))).toBe('models_not_held');
    expect(widerRefusal(holder, controls({ models: ['m3'], requests_per_minute: 5 }))).toBe('models_not_held');
    expect(widerRefusal(holder, controls({ models: ['m1'], requests_per_minute: null }))).toBe('limit_not_held');
    expect(widerRefusal(holder, controls({ models: ['m1'], requests_per_minute: 11 }))).toBe('limit_not_held');
    expect(widerRefusal(controls({ scopes: ['keys', 'read'] }), controls({ scopes: ['all'] }))).toBe('scope_not_held');
  });
});
