import { type Bench, type Command, UsageError, wantsHelp } from '../command.js';

function helpText(benches: readonly Bench[]): string {
  const lines = benches.map((b) => `  ${b.name.padEnd(10)} ${b.summary}`);
  return `Usage: dsv3 bench <name> [options]\n\nBenchmarks (each prints JSON; see dsv3 bench <name> --help):\n${lines.join('\n')}\n`;
}

export const benchCommand: Command = {
  name: 'bench',
  summary: 'run a benchmark (peak, gemm, decode, prefill, train, ...) and print JSON',
  help: 'Usage: dsv3 bench <name> [options]\n\n`dsv3 bench --help` lists the benchmarks.\n',
  flags: {}, // each benchmark's own: Bench.flags
  async run(argv) {
    // loaded on use: the benchmarks import most of dsv3, which other commands need not load
    const { benches } = await import('../bench/index.js');
    const [name, ...rest] = argv;
    if (!name || name === '--help' || name === '-h') {
      process.stdout.write(helpText(benches));
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
