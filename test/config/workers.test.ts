import { afterAll, describe, expect, it } from 'vitest';
import { loadConfigFromObject } from '../../src/config/index.js';
import { MINIMAL, editsYaml, loadError, removeEditsFiles } from './fixtures.js';

afterAll(removeEditsFiles);

describe('gateway.workers', () => {
  it('defaults to 1 and takes a count or auto', () => {
    expect(loadConfigFromObject(MINIMAL, 'test', {}).gateway.workers).toBe(1);
    for (const workers of [4, 'auto'] as const) {
      const config = loadConfigFromObject({ ...MINIMAL, gateway: { ...MINIMAL.gateway, workers } }, 'test', {});
      expect(config.gateway.workers).toBe(workers);
    }
  });

  it('rejects 0 and other words, naming the key and what it takes', () => {
    for (const workers of [0, 'many', 2.5]) {
      expect(loadError(editsYaml({ gateway: { workers } })).message).toMatch(
        /gateway\.workers .*an integer from 1 to 256, or auto/,
      );
    }
  });

  it('refuses several workers over an in-memory SQLite, which each would open as its own database', () => {
    const { message } = loadError(editsYaml({ gateway: { workers: 2 }, database: { url: 'sqlite::memory:' } }));
    expect(message).toContain(
      'gateway.workers is 2 but database.url is sqlite::memory:, which each worker would open as a database of its own',
    );
    expect(
      loadConfigFromObject(
        { ...MINIMAL, gateway: { ...MINIMAL.gateway, workers: 1 }, database: { url: 'sqlite::memory:' } },
        'test',
        {},
      ).gateway.workers,
    ).toBe(1);
  });
});
