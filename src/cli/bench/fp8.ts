/**
 * `dsv3 bench fp8`: the native FP8-weight linear layer (linearFp8: E4M3 codes + 128x128 block
 * scales, decoded inside the kernel) against the same layer with fp32 weights (gemmF32, W^T)
 * and bf16 weights (gemmBf16), side by side. Decode (m = 1..8) is memory bound, so the number
 * that matters is how fast the weights stream: "cold" cycles through enough distinct copies of
 * the weights (>= 96 MB per dtype) that every call reads them from DRAM, "warm" repeats one
 * matrix (from cache when it fits). The three dtypes are timed in interleaved batches so that
 * machine noise hits them alike.
 */
import { nativeAddon } from '../../engine/native.js';
import { quantizeBlocks128 } from '../../engine/fp8/checkpoint-weights.js';
import { f32ArrayToBf16 } from '../../engine/dtype.js';
import { type Bench, UsageError } from '../command.js';
import { bool, int, parseFlags, threads as threadCount } from '../flags.js';
import { median } from '../../data/stats.js';

type Weights = 'f32' | 'bf16' | 'fp8';
interface Case { m: number; k: number; n: number; cache: 'cold' | 'warm' }

const CASES: Case[] = [
  { m: 1, k: 2048, n: 2048, cache: 'cold' },
  { m: 1, k: 2048, n: 2048, cache: 'warm' },
  { m: 1, k: 7168, n: 2048, cache: 'cold' },
  { m: 8, k: 2048, n: 2048, cache: 'cold' },
  { m: 256, k: 2048, n: 2048, cache: 'warm' },
];
const COLD_BYTES = 96 * 1024 * 1024;

/** Deterministic roughly normal values (sum of 4 uniforms), as a weight or activation. */
function randomF32(n: number, seed: number, scale: number): Float32Array {
  const x = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    let t = 0;
    for (let j = 0; j < 4; j++) {
      s = (s * 1103515245 + 12345) >>> 0;
      t += s / 4294967296;
    }
    x[i] = (t - 2) * scale;
  }
  return x;
}

interface Timed { weights: Weights; bytes: number; copies: number; call: (copy: number) => void; per: number[]; batch: number; next: number }

/** Interleaved timing: per sample, one batch of each dtype (>= ~4 ms: short batches are less
 * often cut by the OS scheduler), seconds per call; cold batches continue the copy cycle. */
function measure(ts: Timed[], samples: number): void {
  for (const t of ts) { // warm-up (touches every copy once) and batch size
    for (let c = 0; c < t.copies; c++) t.call(c);
    const t0 = process.hrtime.bigint();
    t.call(0);
    const once = Math.max(1e-6, Number(process.hrtime.bigint() - t0) / 1e9);
    t.batch = Math.ceil(0.004 / once);
  }
  for (let s = 0; s < samples; s++)
    for (const t of ts) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < t.batch; i++) t.call((t.next + i) % t.copies);
      t.next = (t.next + t.batch) % t.copies;
      t.per.push(Number(process.hrtime.bigint() - t0) / 1e9 / t.batch);
    }
}

const FLAGS = { json: bool(), threads: threadCount(), samples: int(1) };

export const fp8Bench: Bench = {
  name: 'fp8',
  summary: 'FP8-weight linear (decoded in-kernel) vs fp32 / bf16 weights, cold and warm',
  help: `Usage: dsv3 bench fp8 [--json] [--threads N] [--samples N]

Times y = x W^T with W [n,k] held as FP8 E4M3 codes + 128x128 block scales (linearFp8), as
fp32 (gemmF32) and as bf16 (gemmBf16), for (m,k,n) in
  (1,2048,2048) cold and warm, (1,7168,2048) cold, (8,2048,2048) cold, (256,2048,2048) warm.
cold: calls cycle through >= 96 MB of distinct weight copies per dtype (DRAM-resident);
warm: one matrix, called repeatedly. Each sample is one batch per dtype, interleaved; the
median (and min) time per call over --samples (default 21) samples is reported. One JSON line
per case and dtype:
  {"bench":"fp8","op":"linear","weights","m","k","n","cache","threads","ms","ms_min","gbps","speedup_vs_f32"}
gbps: weight bytes streamed per second (1 byte per fp8 weight; scales are negligible).
--threads: native threads (default: the addon's, all cores). Without --json a table also goes
to stderr.
`,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench fp8', argv, FLAGS);
    const addon = nativeAddon();
    if (!addon || typeof addon.linearFp8 !== 'function') throw new UsageError('the native addon (with linearFp8) is not available; run `npx node-gyp rebuild`');
    const threads0 = addon.info().threads;
    const threads = values.threads ?? threads0;
    const samples = values.samples ?? 21;
    const table = !values.json;
    addon.setThreads(threads);
    if (table) process.stderr.write(`FP8 linear (${addon.info().isa}, ${threads} threads)\n weights     m     k     n  cache        ms    min ms    GB/s  vs f32\n`);
    try {
      for (const { m, k, n, cache } of CASES) {
        const w = randomF32(n * k, 7 + k + n, 0.02);
        const q = quantizeBlocks128(w, n, k);
        const bh = f32ArrayToBf16(w);
        const x = randomF32(m * k, 3, 1);
        const y = new Float32Array(m * n);
        const copiesOf = (bytes: number): number => (cache === 'warm' ? 1 : Math.max(2, Math.ceil(COLD_BYTES / bytes)));
        const make = <T extends Float32Array | Uint16Array | Uint8Array>(a: T, copies: number): T[] =>
          Array.from({ length: copies }, (_, i) => (i === 0 ? a : (a.slice() as T)));
        const ws = make(w, copiesOf(4 * n * k)), hs = make(bh, copiesOf(2 * n * k)), cs = make(q.codes, copiesOf(n * k));
        const ss = cs.map((_, i) => (i === 0 ? q.scaleInv : q.scaleInv.slice()));
        const timed: Timed[] = [
          { weights: 'f32', bytes: 4 * n * k, copies: ws.length, call: (c) => addon.gemmF32(false, true, m, n, k, 1, x, k, ws[c]!, k, 0, y, n), per: [], batch: 1, next: 0 },
          { weights: 'bf16', bytes: 2 * n * k, copies: hs.length, call: (c) => addon.gemmBf16(false, true, m, n, k, 1, x, k, hs[c]!, k, 0, y, n), per: [], batch: 1, next: 0 },
          { weights: 'fp8', bytes: n * k, copies: cs.length, call: (c) => addon.linearFp8(m, n, k, x, cs[c]!, ss[c]!, 0, y), per: [], batch: 1, next: 0 },
        ];
        measure(timed, samples);
        const f32Sec = median(timed[0]!.per);
        for (const t of timed) {
          const sec = median(t.per), min = Math.min(...t.per);
          const row = {
            bench: 'fp8', op: 'linear', weights: t.weights, m, k, n, cache, threads, ms: +(sec * 1e3).toFixed(4),
            ms_min: +(min * 1e3).toFixed(4), gbps: +(t.bytes / sec / 1e9).toFixed(2), speedup_vs_f32: +(f32Sec / sec).toFixed(2),
          };
          process.stdout.write(JSON.stringify(row) + '\n');
          if (table) {
            process.stderr.write(`${t.weights.padStart(8)} ${[m, k, n].map((v) => String(v).padStart(5)).join(' ')}  ${cache.padEnd(5)} ` +
              `${row.ms.toFixed(3).padStart(9)} ${row.ms_min.toFixed(3).padStart(9)} ${row.gbps.toFixed(2).padStart(7)} ${row.speedup_vs_f32.toFixed(2).padStart(7)}\n`);
          }
        }
      }
    } finally {
      addon.setThreads(threads0);
    }
  },
};
