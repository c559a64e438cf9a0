import { describe, expect, it } from 'vitest';
import { MAX_SEEN_MODELS, ModelLabels } from '../../src/metrics/model-labels.js';

describe('the model label', () => {
  it('names the configured models and counts every other as other, served or not', () => {
    const labels = new ModelLabels(['llama-3-8b', 'mistral-7b']);
    expect(labels.labelFor('llama-3-8b', true)).toBe('llama-3-8b');
    expect(labels.labelFor('mistral-7b', false)).toBe('mistral-7b');
    expect(labels.labelFor('gpt-4', true)).toBe('other');
    expect(labels.labelFor(undefined, true)).toBe('none');
  });

  it('without a list, admits only models the platform served, and no more than MAX_SEEN_MODELS', () => {
    const labels = new ModelLabels([]);
    expect(labels.labelFor('not-served', false)).toBe('other');
    expect(labels.labelFor('not-served', true)).toBe('not-served');
    for (let i = 1; i < MAX_SEEN_MODELS; i += 1) expect(labels.labelFor(`model-${i}`, true)).toBe(`model-${i}`);
    expect(labels.labelFor('one-too-many', true)).toBe('other');
    expect(labels.labelFor('model-1', false)).toBe('model-1');
  });

  it('refuses names that are too long or not plain printable ASCII', () => {
    const labels = new ModelLabels([]);
    expect(labels.labelFor('m'.repeat(129), true)).toBe('other');
    for (const odd of ['with space', 'quote"d', 'back\\slash', 'line\nbreak', 'é']) {
      expect(labels.labelFor(odd, true), odd).toBe('other');
    }
  });
});
