import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

/** Logs `count` lines through the gateway's stdout logger in one turn, then exits at once. */
async function linesLogged(count: number, exit: 'exit' | 'end'): Promise<string[]> {
  const script = `
    import { createLogger } from './src/log.ts';
    const log = createLogger('info');
    for (let i = 0; i < ${count}; i++) log.info({ i, pad: 'x'.repeat(200) }, 'line');
    ${exit === 'exit' ? 'process.exit(0);' : ''}
  `;
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout.split('\n').filter(Boolean);
}

describe('the stdout logger', () => {
  it('writes every line batched in a turn, also when the process exits before the next turn', async () => {
    for (const exit of ['exit', 'end'] as const) {
      const lines = await linesLogged(2000, exit);
      expect(lines).toHaveLength(2000);
      expect(lines.map((line) => (JSON.parse(line) as { i: number }).i)).toEqual([...Array(2000).keys()]);
    }
  });
});
