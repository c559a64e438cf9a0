import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const SOURCE = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

/**
 * The Node flags on a command line script's `#!/usr/bin/env -S node <flags>` line: what `npx
 * gatehouse` runs it with, and so what the image, `npm start`, the bench and the tests run it with.
 */
export function cliNodeFlags(script = SOURCE): string[] {
  const shebang = readFileSync(script, 'utf8').split('\n', 1)[0] ?? '';
  // Without -S, env would take "node --flag" as one program name; a build before the flags has none.
  const flags = /^#!\/usr\/bin\/env (?:node|-S node (.+))$/.exec(shebang);
  if (!flags) throw new Error(`${script} does not start with "#!/usr/bin/env -S node <flags>": ${shebang}`);
  return flags[1]?.split(' ') ?? [];
}

/** Node arguments that run `gatehouse <args>` from the TypeScript sources, with the command line's Node flags. */
export function gatehouseArgs(...args: string[]): string[] {
  // tsx resolved here, so the CLI may run in any working directory.
  return [...cliNodeFlags(), '--import', import.meta.resolve('tsx'), SOURCE, ...args];
}
