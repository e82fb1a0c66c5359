import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Command, UsageError } from '../command.js';
import { out, parseFlags } from '../flags.js';
import { DsvError } from '../../errors.js';
import { readMetrics } from '../../train/metrics.js';
import { buildReportHtml } from '../../train/report.js';
import { writeFileAtomic } from '../../io/atomic-write.js';
import { writeAll } from '../../io/safetensors-write.js';

const HELP = `Usage: dsv3 report RUN_DIR [--out FILE]

Writes one self-contained HTML file (inline SVG charts, no network access needed) from the
run's metrics.jsonl: train / validation / MTP loss curves, learning rate, gradient norm,
throughput, a per-layer expert-load heatmap over steps, the bias trajectories of every MoE
layer and MaxVio per layer.

Options:
  --out FILE   where to write the report (default RUN_DIR/report.html)
`;

const FLAGS = { out: out('file') };

export const reportCommand: Command = {
  name: 'report',
  summary: 'write an HTML report (losses, expert loads, biases, MaxVio) of a training run',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values, positionals } = parseFlags('report', argv, FLAGS, 1);
    if (positionals.length !== 1) throw new UsageError('expected one RUN_DIR (see dsv3 report --help)');
    const dir = positionals[0]!;
    const metricsFile = path.join(dir, 'metrics.jsonl');
    if (!fs.existsSync(metricsFile)) throw new UsageError(`${dir}: no metrics.jsonl (is this a dsv3 train --out directory?)`);
    const records = readMetrics(metricsFile);
    const facts: Record<string, string> = { 'run directory': path.resolve(dir) };
    const runFile = path.join(dir, 'run.json');
    if (fs.existsSync(runFile)) {
      let run: unknown;
      try {
        run = JSON.parse(fs.readFileSync(runFile, 'utf8'));
      } catch (e) {
        throw new DsvError(`${runFile}: not valid JSON (${(e as Error).message})`);
      }
      if (run === null || typeof run !== 'object' || Array.isArray(run)) throw new DsvError(`${runFile}: expected a JSON object (the run's settings)`);
      for (const [k, v] of Object.entries(run)) {
        if (v !== null && typeof v === 'object') continue;
        facts[k] = String(v);
      }
      const mc = (run as Record<string, unknown>)['model'] as Record<string, unknown> | undefined;
      if (mc) {
        facts['model'] = ['hidden_size', 'num_hidden_layers', 'n_routed_experts', 'num_experts_per_tok', 'vocab_size']
          .map((k) => `${k}=${String(mc[k])}`)
          .join(', ');
      }
    }
    const html = buildReportHtml(records, { title: `dsv3 training report: ${path.basename(path.resolve(dir))}`, facts });
    const out = values.out ?? path.join(dir, 'report.html');
    writeFileAtomic(out, (fd) => writeAll(fd, new TextEncoder().encode(html), out));
    process.stdout.write(`${out}\n`);
    return 0;
  },
};
