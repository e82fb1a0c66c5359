#!/usr/bin/env node
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UsageError, wantsHelp } from './command.js';
import { commands } from './commands/index.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    'dsv3 — DeepSeek-V3 in TypeScript: train DeepSeek-V3-architecture MoE models on a CPU,',
    'run Hugging Face DeepSeek-V3 checkpoints (FP8 included), and measure every claim.',
    '',
    'Usage: dsv3 <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Run `dsv3 <command> --help` for the options of a command.',
    'Environment: DSV3_THREADS (compute threads), DSV3_ISA (scalar|avx2|avx512, to lower the',
    'kernel ISA), DSV3_BACKEND=reference (pure-TypeScript kernels), DSV3_ARENA=0 (no step',
    'arena in training), DSV3_HUGEPAGES=0 (no transparent huge pages for large buffers).',
    '',
  ].join('\n');
}

/** Runs one dsv3 command line; a user error (UsageError, DsvError) is one line on stderr and exit code 2. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(version() + '\n');
    return 0;
  }
  const cmd = commands.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`dsv3: unknown command '${name}' (dsv3 --help lists the commands)\n`);
    return 2;
  }
  if (wantsHelp(rest) && cmd.name !== 'bench') {
    process.stdout.write(cmd.help);
    return 0;
  }
  try {
    const code = await cmd.run(rest);
    return typeof code === 'number' ? code : 0;
  } catch (e) {
    if (e instanceof UsageError || (e instanceof Error && e.name === 'DsvError')) {
      const label = name === 'bench' && rest[0] && !rest[0].startsWith('-') ? `bench ${rest[0]}` : name;
      process.stderr.write(`dsv3 ${label}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

// run when executed (node dist/src/cli/main.js, or the npm bin link to it), not when imported
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`dsv3: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
