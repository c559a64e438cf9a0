import { describe, expect, it } from 'vitest';
import { loadConfigFromObject } from '../../src/config/index.js';
import { MINIMAL } from '../config/fixtures.js';

const TOKEN = 'a-scim-token-that-is-long-enough-123456';
const load = (scim: Record<string, unknown>, env: NodeJS.ProcessEnv = {}, extra: Record<string, unknown> = {}) =>
  loadConfigFromObject({ ...MINIMAL, scim, ...extra }, 'scim-test', env);
const problemOf = (run: () => unknown) => {
  try {
    run();
  } catch (error) {
    return (error as Error).message;
  }
  return undefined;
};

describe('the scim section', () => {
  it('is off by default, and takes the token from the environment', () => {
    expect(loadConfigFromObject(MINIMAL, 'scim-test', {}).scim).toEqual({ enabled: false });
    expect(load({ enabled: true, token: '${SCIM_TOKEN}' }, { SCIM_TOKEN: TOKEN }).scim).toEqual({
      enabled: true,
      token: TOKEN,
    });
  });

  it('refuses a short token without echoing it', () => {
    const message = problemOf(() => load({ enabled: true, token: 'short-secret' }));
    expect(message).toContain('scim.token');
    expect(message).not.toContain('short-secret');
  });

  it('refuses SCIM without sign-in', () => {
    expect(problemOf(() => load({ enabled: true }, {}, { auth: { disable_auth: true } }))).toContain(
      'scim.enabled needs sign-in',
    );
  });
});
