/**
 * `dsv3 bench gemm`: native GEMM throughput against the measured FMA peak, for the shapes of
 * DeepSeek-V3's linear layers on a CPU (decode GEMV, small and large token batches), fp32 and
 * bf16 weights, 1 thread and all threads; plus the per-call dispatch cost of a tiny GEMM.
 */
import { availableParallelism } from 'node:os';
import { largeF32 } from '../../engine/memory.js';
import type { Bench } from '../command.js';
import { bool, custom, int, parseFlags } from '../flags.js';
import { type BenchAddon, loadBenchAddon, measurePeak } from './peak.js';
import { median } from '../../data/stats.js';

/** [m, k, n] */
const SHAPES: [number, number, number][] = [
  [1, 2048, 2048], [64, 512, 512], [256, 512, 2048], [1024, 1024, 1024], [2048, 256, 768], [2048, 768, 256],
];
/** nt: y = x W^T (linear layer, W stored [n,k]); nn: y = x W; tn: x^T dy (weight gradient) */
type Op = 'nt' | 'nn' | 'tn';
type DT = 'f32' | 'bf16';

interface Row {
  bench: 'gemm'; op: Op; dtype: DT; m: number; k: number; n: number; threads: number;
  gflops: number; peak_gflops: number; pct_peak: number; pct_peak_paired: number; weight_gbps: number;
}

/** n pseudo-random floats in [-0.5, 0.5), in a buffer allocated as the model's are (memory.ts:
 * on huge pages from 2 MiB up; DSV3_HUGEPAGES=0 for plain ArrayBuffers). */
function randomF32(n: number): Float32Array {
  const x = largeF32(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = (s >>> 8) / 16777216 - 0.5;
  }
  return x;
}

/**
 * Median seconds per call: warm-up, then `samples` timed batches of >= ~5 ms each (short
 * batches, so that on a shared machine the median is a batch the OS did not interrupt).
 * With `peak`, each batch is preceded by a 10 ms FMA-peak measurement on the same threads, and
 * `ratio` is the median over batches of (batch rate / the peak just before it): both see the
 * same momentary state of a shared host (steal, clocks), which the peak measured once per
 * thread count does not.
 */
function timeCall(call: () => void, samples: number, flops: number, peak?: () => number): { sec: number; ratio: number } {
  const t0 = process.hrtime.bigint();
  call();
  call();
  const once = Math.max(1e-7, Number(process.hrtime.bigint() - t0) / 2e9);
  const batch = Math.max(1, Math.ceil(0.005 / once));
  const times: number[] = [];
  const ratios: number[] = [];
  for (let s = 0; s < samples; s++) {
    const p = peak?.();
    const t = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) call();
    const sec = Number(process.hrtime.bigint() - t) / 1e9 / batch;
    times.push(sec);
    if (p) ratios.push(flops / sec / 1e9 / p);
  }
  return { sec: median(times), ratio: ratios.length ? median(ratios) : NaN };
}

function runCase(addon: BenchAddon, op: Op, dtype: DT, m: number, k: number, n: number, samples: number, threads: number): [number, number, number] {
  const ta = op === 'tn', tb = op === 'nt';
  const a = randomF32(m * k);
  const bf = randomF32(k * n);
  const bh = new Uint16Array(bf.buffer.slice(0)).filter((_, i) => i % 2 === 1); // high halves: bf16 of bf
  const c = largeF32(m * n);
  const lda = ta ? m : k, ldb = tb ? k : n;
  const call = dtype === 'f32'
    ? () => addon.gemmF32(ta, tb, m, n, k, 1, a, lda, bf, ldb, 0, c, n)
    : () => addon.gemmBf16(ta, tb, m, n, k, 1, a, lda, bh, ldb, 0, c, n);
  const flops = 2 * m * n * k;
  const { sec, ratio } = timeCall(call, samples, flops, () => addon.fmaPeak(threads, 0.01));
  const weightBytes = k * n * (dtype === 'f32' ? 4 : 2);
  return [flops / sec / 1e9, weightBytes / sec / 1e9, 100 * ratio];
}

/** Median microseconds of one 8x8x8 gemmF32 call from JS (binding + validation + kernel),
 * over 200 batches of 200 calls after a warm-up batch. */
function dispatchUs(addon: BenchAddon): number {
  const a = randomF32(64), b = randomF32(64), c = new Float32Array(64);
  const per: number[] = [];
  for (let s = 0; s < 201; s++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < 200; i++) addon.gemmF32(false, true, 8, 8, 8, 1, a, 8, b, 8, 0, c, 8);
    per.push(Number(process.hrtime.bigint() - t) / 1e3 / 200);
  }
  return median(per.slice(1));
}

/** a,b,...: thread counts, integers >= 1. */
function parseThreadList(raw: string): number[] | undefined {
  const ts = raw.split(',').map((s) => (/^\d+$/.test(s.trim()) ? Number(s) : NaN));
  return ts.every((t) => Number.isInteger(t) && t >= 1 && t <= 256) ? ts : undefined;
}

const FLAGS = { json: bool(), threads: custom('a comma-separated list of thread counts in [1, 256]', parseThreadList), samples: int(1) };

export const gemmBench: Bench = {
  name: 'gemm',
  summary: 'native GEMM GFLOPS vs the FMA peak (fp32 / bf16, linear-layer shapes)',
  help: `Usage: dsv3 bench gemm [--json] [--threads a,b,...] [--samples N]

Times the native GEMM (median of N timed batches of >= 5 ms after warm-up; default 11) for
(m,k,n) in (1,2048,2048) (64,512,512) (256,512,2048) (1024,1024,1024) (2048,256,768)
(2048,768,256) as op "nt" (y = x W^T, the linear layer; W stored [n,k]), plus "nn" and
"tn" at 1024^3, with fp32 and bf16 weights, for each thread count (default: 1 and all
cores). One JSON line per case:
  {"bench":"gemm","op","dtype","m","k","n","threads","gflops","peak_gflops","pct_peak",
   "pct_peak_paired","weight_gbps"}
where peak_gflops is the FMA peak for that thread count (dsv3 bench peak: best of 5 over
0.5 s, measured once before the cases), pct_peak = 100 * gflops / peak_gflops, and
pct_peak_paired the median over the timed batches of 100 * (the batch's rate / a 10 ms peak
measurement on the same threads just before it): on a shared VM, whose speed drifts from one
second to the next, the paired figure compares GEMM and peak under the same conditions.
weight_gbps is the B (weight) bytes streamed per second (the figure that matters for m=1).
Then {"op":"dispatch","us":x}: median microseconds of one 8x8x8 gemmF32 call from JS.
Operands are allocated as the model's tensors are: buffers of 2 MiB and up on transparent
huge pages (src/engine/memory.ts); DSV3_HUGEPAGES=0 in the environment gives plain ones.
Without --json a readable table also goes to stderr.
`,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench gemm', argv, FLAGS);
    const json = values.json === true;
    const threadList = values.threads ?? [1, availableParallelism()];
    const samples = values.samples ?? 11;
    const addon = loadBenchAddon();
    const threads0 = addon.info().threads;
    const out = (row: object): void => void process.stdout.write(JSON.stringify(row) + '\n');
    if (!json) process.stderr.write(`GEMM (${addon.info().isa})\n op   dtype     m     k     n  thr   GFLOPS   peak  %peak paired  W GB/s\n`);
    try {
      for (const threads of [...new Set(threadList)]) {
        const peak = measurePeak(addon, threads, 0.5);
        addon.setThreads(threads);
        for (const dtype of ['f32', 'bf16'] as DT[]) {
          const cases: [Op, number, number, number][] = SHAPES.map(([m, k, n]) => ['nt', m, k, n]);
          cases.push(['nn', 1024, 1024, 1024], ['tn', 1024, 1024, 1024]);
          for (const [op, m, k, n] of cases) {
            const [gflops, gbps, paired] = runCase(addon, op, dtype, m, k, n, samples, threads);
            const row: Row = {
              bench: 'gemm', op, dtype, m, k, n, threads, gflops: +gflops.toFixed(1), peak_gflops: +peak.toFixed(1),
              pct_peak: +((100 * gflops) / peak).toFixed(1), pct_peak_paired: +paired.toFixed(1), weight_gbps: +gbps.toFixed(2),
            };
            out(row);
            if (!json) {
              process.stderr.write(`${op.padStart(3)} ${dtype.padStart(6)} ${[m, k, n].map((x) => String(x).padStart(5)).join(' ')} ${String(threads).padStart(4)} ` +
                `${gflops.toFixed(1).padStart(8)} ${peak.toFixed(0).padStart(6)} ${((100 * gflops) / peak).toFixed(1).padStart(6)} ${paired.toFixed(1).padStart(6)} ${gbps.toFixed(2).padStart(7)}\n`);
            }
          }
        }
      }
      addon.setThreads(threads0);
      const us = dispatchUs(addon);
      out({ bench: 'gemm', op: 'dispatch', us: +us.toFixed(3) });
      if (!json) process.stderr.write(`dispatch: 8x8x8 gemmF32 from JS, median ${us.toFixed(2)} us per call\n`);
    } finally {
      addon.setThreads(threads0);
    }
  },
};
