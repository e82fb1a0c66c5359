/**
 * `dsv3 experiment list` and `dsv3 experiment NAME`: the paper's claims, each one command
 * (src/experiments/). This file only parses flags; the runner writes results.json and index.html.
 */
import * as path from 'node:path';
import { type Command, UsageError } from '../command.js';
import { bool, int, out, parseFlags } from '../flags.js';
import { experiments } from '../../experiments/registry.js';
import { readResults, runExperiment } from '../../experiments/runner.js';
import { keySvg } from '../../experiments/page.js';
import { writeFileAtomic } from '../../io/atomic-write.js';

/** Width of the name column of the list: the longest name and two spaces. */
const NAME_WIDTH = Math.max(13, ...experiments.map((e) => e.name.length + 2));

const HELP = `Usage: dsv3 experiment list
       dsv3 experiment NAME [--seeds N] [--seed-offset N] [--steps N] [--out DIR] [--quick] [--resume]
       dsv3 experiment NAME --svg FILE [--out DIR]

Runs one of the paper's claims as an experiment: its arms (configurations) x seeds, one after
the other in this process, with one progress line (arm, seed, step, ETA) on stderr. Writes
DIR/results.json (every run's curves and final values, settings, command, commit, machine,
date), DIR/key.svg (the experiment's key chart alone) and DIR/index.html (curves with a band over seeds, mean ± sd per arm, and the verdict:
reproduced, not reproduced, or inconclusive when the difference is smaller than twice the
pooled standard deviation of the seeds). The verdicts are also printed on stdout.

Experiments:
${experiments.map((e) => `  ${e.name.padEnd(NAME_WIDTH)}${e.summary}`).join('\n')}

Options:
  --seeds N     seeds per arm, 1..100 (default 3)
  --seed-offset N  the first seed, 0..1000000 (default 0): seeds N .. N + seeds - 1, to re-run
                with other seeds than a recorded result
  --steps N     steps per run (default: the experiment's full size)
  --out DIR     output directory (default runs/experiments/NAME)
  --quick       a tiny size that runs in seconds (CI; not a result)
  --resume      keep the (arm, seed) pairs DIR/results.json already holds with the same settings
  --svg FILE    run nothing: write the key chart of DIR/results.json (an earlier run of NAME)
                to FILE as a standalone SVG
`;

const FLAGS = { seeds: int(1, 100), 'seed-offset': int(0, 1_000_000), steps: int(1), out: out('dir'), quick: bool(), resume: bool(), svg: out('file') };

export const experimentCommand: Command = {
  name: 'experiment',
  summary: "reproduce one of the paper's claims: arms x seeds, results.json, an HTML page and a verdict",
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values: v, positionals } = parseFlags('experiment', argv, FLAGS, 1);
    const name = positionals[0];
    if (name === undefined) throw new UsageError('expected an experiment NAME or list (see dsv3 experiment --help)');
    if (name === 'list') {
      if (Object.keys(v).length) throw new UsageError('experiment list takes no options');
      for (const e of experiments) process.stdout.write(`${e.name.padEnd(NAME_WIDTH)}${e.summary}\n`);
      return 0;
    }
    const exp = experiments.find((e) => e.name === name);
    if (!exp) throw new UsageError(`unknown experiment '${name}' (one of ${experiments.map((e) => e.name).join(', ')}; dsv3 experiment list)`);
    const dir = v.out ?? path.join('runs', 'experiments', exp.name);
    if (v.svg !== undefined) {
      const other = Object.keys(v).filter((k) => k !== 'svg' && k !== 'out');
      if (other.length) throw new UsageError(`--svg writes the chart of an earlier run and takes only --out, not --${other[0]}`);
      writeFileAtomic(v.svg, keySvg(exp, readResults(path.join(dir, 'results.json'), exp.name)));
      process.stdout.write(`${v.svg}\n`);
      return 0;
    }
    const res = await runExperiment(exp, {
      seeds: v.seeds ?? 3,
      ...(v['seed-offset'] !== undefined ? { seedOffset: v['seed-offset'] } : {}),
      ...(v.steps !== undefined ? { steps: v.steps } : {}),
      out: dir,
      quick: v.quick === true,
      resume: v.resume === true,
      command: ['dsv3', 'experiment', ...argv].join(' '),
    });
    for (const x of res.verdicts) process.stdout.write(`${x.outcome.toUpperCase()}: ${x.paper}\n  measured: ${x.measured}\n`);
    process.stdout.write(`${path.join(dir, 'results.json')}\n${path.join(dir, 'index.html')}\n${path.join(dir, 'key.svg')}\n`);
    return 0;
  },
};
