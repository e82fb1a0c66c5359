import { type Command, type FlagTable, UsageError, wantsHelp } from '../command.js';

/** A benchmark: prints JSON lines on stdout (and a readable table on stderr unless --json). */
export interface Bench {
  name: string;
  summary: string;
  help: string;
  /** Every flag with its domain (flags.ts), as Command.flags. */
  flags: FlagTable;
  run(argv: string[]): Promise<void>;
}

/** Registered benchmarks; each lives in src/cli/bench/<name>.ts. */
export const benches: Bench[] = [];

export function registerBench(b: Bench): void {
  benches.push(b);
}

function helpText(): string {
  const lines = benches.map((b) => `  ${b.name.padEnd(10)} ${b.summary}`);
  return `Usage: dsv3 bench <name> [options]\n\nBenchmarks (each prints JSON; see dsv3 bench <name> --help):\n${lines.join('\n')}\n`;
}

export const benchCommand: Command = {
  name: 'bench',
  summary: 'run a benchmark (peak, gemm, decode, prefill, train, ...) and print JSON',
  get help() {
    return helpText();
  },
  flags: {}, // each benchmark's own: Bench.flags
  async run(argv) {
    await import('../bench/all.js');
    const [name, ...rest] = argv;
    if (!name || name === '--help' || name === '-h') {
      process.stdout.write(helpText());
      return 0;
    }
    const b = benches.find((x) => x.name === name);
    if (!b) throw new UsageError(`unknown benchmark '${name}'; available: ${benches.map((x) => x.name).join(', ')}`);
    if (wantsHelp(rest)) {
      process.stdout.write(b.help);
      return 0;
    }
    await b.run(rest);
    return 0;
  },
};
