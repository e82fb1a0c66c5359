/**
 * `dsv3 bench dispatch`: the fixed cost of one tiny op (8x8 add) through each layer — the raw
 * kernel call, the differentiable op without a graph, and with a graph recorded — as median
 * microseconds over many calls. This is the per-op overhead a decode step or a training step
 * pays on top of the math.
 */
import { Tensor } from '../../engine/tensor.js';
import { noGrad } from '../../engine/autograd.js';
import * as ops from '../../engine/ops/index.js';
import { kernels } from '../../engine/backend.js';
import { BinaryOp } from '../../engine/kernels.js';
import type { Bench } from '../command.js';
import { bool, parseFlags } from '../flags.js';

const FLAGS = { json: bool() };

function medianUs(fn: () => void, reps = 21, inner = 2000): number {
  for (let i = 0; i < inner; i++) fn();
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < inner; i++) fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1000 / inner);
  }
  times.sort((a, b) => a - b);
  return times[reps >> 1]!;
}

export const dispatchBench: Bench = {
  name: 'dispatch',
  summary: 'per-op overhead of a tiny op (8x8 add): kernel, op, op with autograd',
  help: `Usage: dsv3 bench dispatch [--json]

Prints {op, layer, us} lines: the median microseconds of one 8x8 add through the raw kernel
(kernels().binary), through ops.add without a graph, and through ops.add recording the graph.
`,
  flags: FLAGS,
  async run(argv) {
    parseFlags('bench dispatch', argv, FLAGS);
    const k = kernels();
    const a = Tensor.fromF32(new Float32Array(64).fill(1), [8, 8]);
    const b = Tensor.fromF32(new Float32Array(64).fill(2), [8, 8]);
    const pa = Tensor.param(new Float32Array(64).fill(1), [8, 8]);
    const out = new Float32Array(64);
    const af = a.f32();
    const bf = b.f32();
    const rows = [
      { layer: 'kernel', us: medianUs(() => k.binary(BinaryOp.Add, af, bf, out, 64)) },
      { layer: 'op', us: medianUs(() => noGrad(() => ops.add(a, b))) },
      { layer: 'op+autograd', us: medianUs(() => ops.add(pa, b)) },
    ];
    for (const r of rows) process.stdout.write(JSON.stringify({ bench: 'dispatch', op: 'add', shape: [8, 8], backend: k.name, layer: r.layer, us: Math.round(r.us * 1000) / 1000 }) + '\n');
  },
};
