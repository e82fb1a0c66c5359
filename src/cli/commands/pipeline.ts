/**
 * `dsv3 pipeline`: Table 2 of the DeepSeek-V3 report (§3.2.1) at small scale. For PP pipeline
 * stages and N micro-batches it generates the per-rank op order of 1F1B, ZB1P, DualPipe and
 * DualPipeV (src/parallel/), replays each in the event simulator with the given per-op times,
 * and prints the simulated bubble and peak activations next to the Table 2 formulas.
 */
import { UsageError, type Command } from '../command.js';
import { bool, int, nonNegative, oneOf, out, parseFlags, text } from '../flags.js';
import { table2Bubble, table2IsExact, table2Memory } from '../../parallel/bubble.js';
import { buildSchedule, PIPELINE_ALGOS } from '../../parallel/schedules.js';
import type { PipelineAlgo, PipelineSchedule } from '../../parallel/schedule-types.js';
import { simulateSchedule, type SimMode, type SimResult, type SimSend, type SimTimes } from '../../parallel/simulate.js';
import { writeFileAtomic } from '../../io/atomic-write.js';

const HELP = `Usage: dsv3 pipeline [--stages PP] [--microbatches N] [--algo LIST] [--times SPEC]
                     [--latency L] [--mode dataflow|batched] [--send rendezvous|eager]
                     [--timeline] [--json] [--schedule-out FILE]

Table 2 of the DeepSeek-V3 report at small scale. For PP pipeline stages and N micro-batches
per step, generates each rank's operation order for 1F1B, ZB1P (ZB-H1), DualPipe and DualPipeV
(DUALPIPE.md), simulates it with the given per-op times, and prints per schedule: devices,
parameters per device, the simulated bubble (worst rank, and every rank), Table 2's formula and
whether it is exact for these times (DUALPIPE.md §8.3), peak activations per device against
Table 2's, and the step time (makespan).

Options:
  --stages PP          pipeline stages (default 8). 1F1B, ZB1P and DualPipe use PP ranks,
                       DualPipeV PP/2 ranks holding two stages each. DualPipe and DualPipeV
                       need PP even.
  --microbatches N     micro-batches per step (default 20). DualPipe needs N even and
                       N >= 2*PP; DualPipeV N >= PP.
  --algo LIST          comma-separated subset of 1f1b,zb1p,dualpipe,dualpipev (default all)
  --times SPEC         per-op times F,B,W,FB as F=1,B=2,W=1,FB=3 (the default): F a forward
                       chunk, B a full backward chunk, W its weight part (a split backward
                       costs B-W), FB an overlapped forward+backward pair (max(F,B) <= FB <=
                       F+B). Any of the four may be given; the rest keep their defaults.
  --latency L          delay of each message between ranks (default 0)
  --mode M             dataflow (default: every op starts as soon as its inputs are there) or
                       batched (replays the reference runtime's batched p2p waits, DualPipe
                       and DualPipeV only)
  --send S             with --mode batched: rendezvous (default) or eager sends
  --timeline           also print each rank's timeline (one character per time unit)
  --json               one JSON object per schedule on stdout instead of the table
  --schedule-out FILE  write the generated schedules (fixture format) to FILE as JSON

Example: dsv3 pipeline --stages 8 --microbatches 20 --times F=2,B=3,W=1,FB=4
`;

/** The rows of Table 2, in its order. */
const TABLE2_ORDER: readonly PipelineAlgo[] = ['1f1b', 'zb1p', 'dualpipe', 'dualpipev'];
const DEFAULT_TIMES: SimTimes = { F: 1, B: 2, W: 1, FB: 3, latency: 0 };

interface Row {
  algo: PipelineAlgo;
  ranks: number;
  stages: number;
  microbatches: number;
  parameters_per_device: number;
  makespan: number;
  bubble_worst: number;
  bubble_per_rank: number[];
  table2_bubble: number;
  table2_exact: boolean;
  peak_activations_worst: number;
  table2_activations: number;
  result: SimResult;
}

function parseTimes(spec: string | undefined, latency: number): SimTimes {
  const t: SimTimes = { ...DEFAULT_TIMES, latency };
  if (spec === undefined) return t;
  for (const part of spec.split(',')) {
    const m = /^(F|B|W|FB)=(.+)$/.exec(part.trim());
    const v = m ? Number(m[2]) : NaN;
    if (!m || !Number.isFinite(v) || v < 0) {
      throw new UsageError(`--times: expected entries like F=1,B=2,W=1,FB=3 with values >= 0, got '${part}'`);
    }
    t[m[1] as 'F' | 'B' | 'W' | 'FB'] = v;
  }
  if (!(t.F > 0 && t.B > 0)) throw new UsageError(`--times: F and B must be > 0 (got F=${t.F}, B=${t.B})`);
  if (t.W > t.B) throw new UsageError(`--times: W (${t.W}) cannot exceed B (${t.B}), the full backward it is part of`);
  if (t.FB < Math.max(t.F, t.B) || t.FB > t.F + t.B) {
    throw new UsageError(`--times: FB must lie in [max(F,B), F+B] = [${Math.max(t.F, t.B)}, ${t.F + t.B}], got ${t.FB}`);
  }
  return t;
}

const FLAGS = {
  stages: int(1),
  microbatches: int(1),
  algo: text(),
  times: text(),
  latency: nonNegative(),
  mode: oneOf(['dataflow', 'batched'] as const),
  send: oneOf(['rendezvous', 'eager'] as const),
  timeline: bool(),
  json: bool(),
  'schedule-out': out('file'),
};

function parseArgs(argv: string[]): {
  stages: number; microbatches: number; algos: PipelineAlgo[]; times: SimTimes; mode: SimMode; send: SimSend | null;
  timeline: boolean; json: boolean; scheduleOut: string | null;
} {
  const { values: v } = parseFlags('pipeline', argv, FLAGS);
  const algoList = (v.algo ?? TABLE2_ORDER.join(',')).split(',').map((s) => s.trim());
  for (const a of algoList) {
    if (!(PIPELINE_ALGOS as readonly string[]).includes(a)) {
      throw new UsageError(`--algo: unknown schedule '${a}' (expected some of ${PIPELINE_ALGOS.join(', ')})`);
    }
  }
  const mode = v.mode ?? 'dataflow';
  if (v.send !== undefined && mode !== 'batched') throw new UsageError('--send applies to --mode batched only');
  return {
    stages: v.stages ?? 8,
    microbatches: v.microbatches ?? 20,
    algos: [...new Set(algoList)] as PipelineAlgo[],
    times: parseTimes(v.times, v.latency ?? 0),
    mode,
    send: mode === 'batched' ? (v.send ?? 'rendezvous') : null,
    timeline: v.timeline === true,
    json: v.json === true,
    scheduleOut: v['schedule-out'] ?? null,
  };
}

/** Ranks for PP stages: DualPipeV holds two stages per rank. */
function ranksFor(algo: PipelineAlgo, stages: number): number {
  if (algo === 'dualpipev') {
    if (stages % 2 !== 0) throw new UsageError(`DualPipeV needs an even number of stages (two per rank), got --stages ${stages}`);
    return stages / 2;
  }
  return stages;
}

function simulateOne(algo: PipelineAlgo, o: ReturnType<typeof parseArgs>): { row: Row; schedule: PipelineSchedule } {
  const ranks = ranksFor(algo, o.stages);
  const schedule = buildSchedule(algo, ranks, o.microbatches); // DsvError names a bad size
  if (o.mode === 'batched' && !schedule.program) {
    throw new UsageError(`--mode batched replays the p2p program of DualPipe / DualPipeV; ${algo} has none (use --algo dualpipe,dualpipev)`);
  }
  const r = simulateSchedule(schedule, o.times, o.mode, o.send);
  const mem = table2Memory(algo, o.stages);
  const peak = Math.max(...r.peak_activations_to_W);
  return {
    schedule,
    row: {
      algo, ranks, stages: o.stages, microbatches: o.microbatches, parameters_per_device: mem.parametersPerDevice,
      makespan: r.makespan, bubble_worst: Math.max(...r.bubble), bubble_per_rank: r.bubble,
      table2_bubble: table2Bubble(algo, o.stages, o.times), table2_exact: o.times.latency === 0 && o.mode === 'dataflow' && table2IsExact(algo, o.stages, o.microbatches, o.times),
      peak_activations_worst: peak, table2_activations: mem.activationsPerDevice, result: r,
    },
  };
}

const NAMES: Record<PipelineAlgo, string> = { '1f1b': '1F1B', zb1p: 'ZB1P', dualpipe: 'DualPipe', dualpipev: 'DualPipeV' };

function fmt(x: number): string {
  return Number.isInteger(x) ? String(x) : String(+x.toFixed(4));
}

/** One line per rank, one character per time unit (rounded): F forward, B backward (b split),
 * W weight, X an overlapped pair, '.' idle. */
function timelineText(r: SimResult): string {
  const lines: string[] = [];
  const width = Math.ceil(r.makespan);
  for (let rank = 0; rank < r.timeline.length; rank++) {
    const row = new Array<string>(width).fill('.');
    for (const [s, e, label] of r.timeline[rank]!) {
      const ch = label.includes('&') ? 'X' : label[0]!;
      for (let t = Math.round(s); t < Math.round(e); t++) row[t] = ch;
    }
    lines.push(`  rank ${String(rank).padStart(2)} ${row.join('')}`);
  }
  return lines.join('\n');
}

async function run(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  const rows: Row[] = [];
  const schedules: PipelineSchedule[] = [];
  for (const algo of o.algos) {
    const { row, schedule } = simulateOne(algo, o);
    rows.push(row);
    schedules.push(schedule);
  }
  if (o.scheduleOut) writeFileAtomic(o.scheduleOut, JSON.stringify(schedules.length === 1 ? schedules[0] : schedules));
  if (o.json) {
    for (const { result, ...rest } of rows) {
      process.stdout.write(JSON.stringify({ ...rest, times: o.times, mode: o.mode, send: o.send, ...(o.timeline ? { timeline: result.timeline } : {}) }) + '\n');
    }
    return 0;
  }
  const t = o.times;
  const out: string[] = [
    `PP = ${o.stages} stages, N = ${o.microbatches} micro-batches; F=${fmt(t.F)} B=${fmt(t.B)} W=${fmt(t.W)} F&B=${fmt(t.FB)}` +
      `${t.latency ? `, latency ${fmt(t.latency)}` : ''}; ${o.mode}${o.send ? ` (${o.send} sends)` : ''}`,
    '',
    'schedule    devices  params/dev  bubble (worst)  Table 2 bubble  exact?  activations (peak)  Table 2  step time',
  ];
  for (const r of rows) {
    out.push(
      `${NAMES[r.algo].padEnd(11)} ${String(r.ranks).padStart(7)}  ${(r.parameters_per_device + 'x').padStart(10)}  ` +
        `${fmt(r.bubble_worst).padStart(14)}  ${fmt(r.table2_bubble).padStart(14)}  ${(r.table2_exact ? 'yes' : 'no').padStart(6)}  ` +
        `${String(r.peak_activations_worst).padStart(18)}  ${String(r.table2_activations).padStart(7)}  ${fmt(r.makespan).padStart(9)}`,
    );
  }
  out.push('', 'Bubble per rank:');
  for (const r of rows) out.push(`  ${NAMES[r.algo].padEnd(10)} ${r.bubble_per_rank.map(fmt).join(' ')}`);
  out.push(
    '',
    'bubble = step time - a rank\'s busy time; activations in chunk-activations of one micro-batch, counted from',
    'the start of F to the end of the backward (to W when it is split). "exact?": whether these times lie where',
    'Table 2\'s formula is exact (DUALPIPE.md §8.3); outside that region it is an approximation.',
  );
  if (o.timeline) {
    for (const r of rows) out.push('', `${NAMES[r.algo]} timeline (F forward, B backward, b split backward, W weight, X F&B pair, . idle):`, timelineText(r.result));
  }
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

export const pipelineCommand: Command = {
  name: 'pipeline',
  summary: 'pipeline schedules (1F1B, ZB1P, DualPipe, DualPipeV): simulated bubbles vs Table 2',
  help: HELP,
  flags: FLAGS,
  run,
};
