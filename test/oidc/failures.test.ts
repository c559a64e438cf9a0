import { describe, expect, it } from 'vitest';
import { describeCallbackError } from '../../src/oidc/failures.js';

describe('describeCallbackError', () => {
  it('maps the codes a person can act on and keeps the raw code only as a detail', () => {
    expect(describeCallbackError('consent_required')).toEqual({
      reason: 'consent_required',
      providerCode: 'consent_required',
    });
  });

  it.each(['toString', '__proto__', 'constructor', 'hasOwnProperty', 'valueOf'])(
    'maps %s, a name Object.prototype has, to other instead of failing with a 500',
    (code) => {
      expect(describeCallbackError(code).reason).toBe('other');
    },
  );
});
