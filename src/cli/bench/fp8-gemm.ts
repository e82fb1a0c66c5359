/**
 * `dsv3 bench fp8-gemm`: the FP8 training GEMM on codes (Kernels.fp8Gemm: E4M3 codes multiplied
 * by bf16 dot products where the CPU has avx512_bf16, each 128-wide block promoted with its two
 * scales; paper §3.3.2) against the fp32 GEMM (gemmF32, what `--fp8` ran before: dequantised
 * operands) and the bf16 GEMM (gemmBf16: A rounded to bf16, B bf16) on the same shapes, timed
 * in interleaved batches so that the noise of a shared machine hits all three alike. Shapes are
 * the training GEMMs of configs/bench-small.json (2048 tokens) and 1024^3; the three FP8 GEMMs of
 * a Linear (Fprop: X tiles x W blocks; Dgrad: dY tiles x W^T blocks; Wgrad: dY^T x X^T, 128x1
 * tiles) at 1024^3.
 */
import { nativeAddonPath } from '../../engine/native.js';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { type Bench, UsageError } from '../command.js';
import { bool, int, parseFlags, threads as threadCount } from '../flags.js';
import { median } from '../../data/stats.js';
import { largeF32 } from '../../engine/memory.js';
import { fp8GemmScaleCount } from '../../engine/reference/fp8-gemm.js';

type GemmFn<B> = (ta: boolean, tb: boolean, m: number, n: number, k: number, alpha: number, a: Float32Array, lda: number, b: B, ldb: number, beta: number, c: Float32Array, ldc: number) => void;
interface Addon {
  info(): { isa: string; threads: number; avx512bf16: boolean };
  setThreads(n: number): number;
  gemmF32: GemmFn<Float32Array>;
  gemmBf16: GemmFn<Uint16Array>;
  fp8Gemm(m: number, n: number, k: number, ac: Uint8Array, as: Float32Array, al: number, bc: Uint8Array, bs: Float32Array, bl: number, beta: number, c: Float32Array, ldc: number): void;
}

/** [label, m, k, n, A layout, B layout] (fp8Gemm layouts; the fp32/bf16 GEMM runs the same m, n, k as y = x W^T) */
const CASES: [string, number, number, number, number, number][] = [
  ['fprop', 2048, 256, 768, 0, 2], ['fprop', 2048, 768, 256, 0, 2], ['fprop', 512, 256, 128, 0, 2], ['fprop', 512, 128, 256, 0, 2],
  ['fprop', 1024, 1024, 1024, 0, 2], ['dgrad', 1024, 1024, 1024, 0, 3], ['wgrad', 1024, 1024, 1024, 1, 1],
];

function randomBytes(n: number, seed: number): Uint8Array {
  const x = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    const c = (s >>> 24) & 0xff;
    x[i] = (c & 0x7f) === 0x7f ? 0 : c;
  }
  return x;
}
function randomF32(n: number, seed: number): Float32Array {
  const x = largeF32(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = (s >>> 8) / 16777216 - 0.5;
  }
  return x;
}

const FLAGS = { json: bool(), samples: int(1), threads: threadCount() };

export const fp8GemmBench: Bench = {
  name: 'fp8-gemm',
  summary: 'FP8 training GEMM on codes (bf16 dot products, N_C = 128 promotion) vs the fp32 and bf16 GEMMs',
  help: `Usage: dsv3 bench fp8-gemm [--json] [--samples N] [--threads T]

Times fp8Gemm (E4M3 codes, one scale per 128 along k, the N_C = 128 promotion of paper section
3.3.2; VDPBF16PS on CPUs with avx512_bf16) against gemmF32 and gemmBf16 on the same (m, k, n):
the training GEMMs of configs/bench-small.json with 2048 tokens, and Fprop / Dgrad / Wgrad at
1024^3. Per sample one batch (>= ~5 ms) of each kernel in turn; medians of N samples (default
9) on T threads (default all). One JSON line per case:
  {"bench":"fp8-gemm","gemm","m","k","n","threads","gflops_fp8","gflops_bf16","gflops_f32",
   "fp8_vs_bf16","fp8_vs_f32"}
Without --json a table also goes to stderr.
`,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench fp8-gemm', argv, FLAGS);
    const path = nativeAddonPath();
    if (!existsSync(path)) throw new UsageError(`the native addon is not built (${path}); run \`npx node-gyp rebuild\``);
    const addon = createRequire(import.meta.url)(path) as Addon;
    if (typeof addon.fp8Gemm !== 'function') throw new UsageError(`the native addon (${path}) has no fp8Gemm: rebuild it (npm rebuild dsv3)`);
    const samples = values.samples ?? 9;
    const threads0 = addon.info().threads;
    const threads = values.threads ?? threads0;
    addon.setThreads(threads);
    const json = values.json === true;
    if (!json) process.stderr.write(`fp8Gemm vs gemmBf16 vs gemmF32 (${addon.info().isa}${addon.info().avx512bf16 ? ' + avx512_bf16' : ''}, ${threads} threads)\n gemm       m     k     n    fp8  bf16   f32  (GFLOPS)  fp8/bf16 fp8/f32\n`);
    try {
      for (const [label, m, k, n, la, lb] of CASES) {
        const ac = randomBytes(m * k, 1), bc = randomBytes(n * k, 2);
        const as = randomF32(fp8GemmScaleCount(la, m, k), 3).map((v) => 1e-3 * (1 + v));
        const bs = randomF32(fp8GemmScaleCount(lb, n, k), 4).map((v) => 1e-3 * (1 + v));
        const a = randomF32(m * k, 5), bf = randomF32(n * k, 6);
        const bh = new Uint16Array(bf.buffer.slice(0)).filter((_, i) => i % 2 === 1);
        const c = largeF32(m * n);
        const calls: (() => void)[] = [
          () => addon.fp8Gemm(m, n, k, ac, as, la, bc, bs, lb, 0, c, n),
          () => addon.gemmBf16(false, true, m, n, k, 1, a, k, bh, k, 0, c, n),
          () => addon.gemmF32(false, true, m, n, k, 1, a, k, bf, k, 0, c, n),
        ];
        const batch = calls.map((f) => {
          f();
          const t0 = process.hrtime.bigint();
          f();
          return Math.max(1, Math.ceil(0.005 / Math.max(1e-7, Number(process.hrtime.bigint() - t0) / 1e9)));
        });
        const secs: number[][] = calls.map(() => []);
        for (let s = 0; s < samples; s++)
          calls.forEach((f, i) => {
            const t0 = process.hrtime.bigint();
            for (let r = 0; r < batch[i]!; r++) f();
            secs[i]!.push(Number(process.hrtime.bigint() - t0) / 1e9 / batch[i]!);
          });
        const gf = secs.map((t) => (2 * m * n * k) / median(t) / 1e9);
        const row = {
          bench: 'fp8-gemm', gemm: label, m, k, n, threads, gflops_fp8: +gf[0]!.toFixed(1), gflops_bf16: +gf[1]!.toFixed(1), gflops_f32: +gf[2]!.toFixed(1),
          fp8_vs_bf16: +(gf[0]! / gf[1]!).toFixed(3), fp8_vs_f32: +(gf[0]! / gf[2]!).toFixed(3),
        };
        process.stdout.write(JSON.stringify(row) + '\n');
        if (!json) process.stderr.write(`${label.padEnd(6)} ${[m, k, n].map((x) => String(x).padStart(5)).join(' ')} ${gf.map((g) => g.toFixed(0).padStart(5)).join(' ')}            ${row.fp8_vs_bf16.toFixed(2).padStart(5)}   ${row.fp8_vs_f32.toFixed(2).padStart(5)}\n`);
      }
    } finally {
      addon.setThreads(threads0);
    }
  },
};
