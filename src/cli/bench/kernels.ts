/**
 * `dsv3 bench kernels`: the native fused kernels against the pure-TypeScript reference on
 * training- and decode-sized problems: softmax, rmsNorm, siluMul, cross-entropy (forward +
 * backward), flash attention forward and backward, MLA's absorbed decode attention, and the
 * fixed cost of a tiny (8x8) elementwise call. Prints one JSON line per case:
 *   {bench, op, shape, native_ms, reference_ms, speedup, gbps | gflops | us_per_call, isa, threads}
 * gbps counts the bytes a kernel must move (each input read once, each output written once);
 * gflops counts the useful multiply-adds (causal attention: only the visible key/query pairs).
 */
import { type Bench, UsageError } from '../command.js';
import { bool, parseFlags, text } from '../flags.js';
import { loadNativeKernels, nativeAddon, nativeLoadError } from '../../engine/native.js';
import { referenceKernels } from '../../engine/reference/index.js';
import type { AttentionParams, Kernels } from '../../engine/kernels.js';

/** Median wall time (ms) of fn over runs filling ~minMs, after one warm-up run; a warm-up
 * slower than `once` ms (the reference on big shapes) is itself the measurement. */
function timeMs(fn: () => void, minMs: number, maxReps = 50, once = 1000): number {
  const t0 = performance.now();
  fn();
  const first = performance.now() - t0;
  if (first > once) return first;
  const times: number[] = [];
  let total = 0;
  while (times.length < maxReps && (total < minMs || times.length < 3)) {
    const s = performance.now();
    fn();
    const dt = performance.now() - s;
    times.push(dt);
    total += dt;
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1]!;
}

function rand(n: number, lo: number, hi: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = lo + ((hi - lo) * s) / 4294967296;
  }
  return a;
}

interface Case {
  op: string;
  shape: number[];
  /** runs the case with the given kernels */
  run(k: Kernels): void;
  bytes?: number;
  flops?: number;
  /** the case makes this many kernel calls: report microseconds per call instead of a rate */
  calls?: number;
}

/** The cases; `setup` computes inputs that come from another kernel (attention's out, lse). */
function cases(setup: Kernels): Case[] {
  const out: Case[] = [];
  {
    const [r, c] = [8192, 4096];
    const x = rand(r * c, -4, 4, 1), y = new Float32Array(r * c);
    out.push({ op: 'softmax', shape: [r, c], bytes: 8 * r * c, run: (k) => k.softmax(x, y, r, c) });
  }
  {
    const [r, c] = [4096, 256];
    const x = rand(r * c, -2, 2, 2), w = rand(c, 0.5, 1.5, 3), y = new Float32Array(r * c), rs = new Float32Array(r);
    out.push({ op: 'rmsNorm', shape: [r, c], bytes: 8 * r * c, run: (k) => k.rmsNorm(x, w, y, rs, r, c, 1e-6) });
  }
  {
    const n = 4 << 20;
    const g = rand(n, -6, 6, 4), u = rand(n, -1, 1, 5), y = new Float32Array(n);
    out.push({ op: 'siluMul', shape: [n], bytes: 12 * n, run: (k) => k.siluMul(g, u, y, n) });
  }
  {
    const [r, v] = [2048, 4096];
    const logits = rand(r * v, -8, 8, 6), targets = new Int32Array(r).map((_, i) => (i * 7919) % v);
    const loss = new Float32Array(r), lse = new Float32Array(r), dloss = new Float32Array(r).fill(1 / r);
    const dl = new Float32Array(r * v);
    out.push({
      op: 'crossEntropy fwd+bwd', shape: [r, v], bytes: 12 * r * v,
      run: (k) => {
        k.crossEntropy(logits, targets, loss, lse, r, v);
        k.crossEntropyBackward(logits, targets, lse, dloss, dl, r, v);
      },
    });
  }
  {
    const [B, H, T, dqk, dv] = [8, 8, 256, 48, 32];
    const p: AttentionParams = {
      batch: B, heads: H, kvHeads: H, tq: T, tk: T, dqk, dv, scale: 1 / Math.sqrt(dqk), causalOffset: 0,
      qStrides: [T * H * dqk, H * dqk, dqk], kStrides: [T * H * dqk, H * dqk, dqk],
      vStrides: [T * H * dv, H * dv, dv], oStrides: [T * H * dv, H * dv, dv],
    };
    const q = rand(B * T * H * dqk, -1, 1, 7), kk = rand(B * T * H * dqk, -1, 1, 8), v = rand(B * T * H * dv, -1, 1, 9);
    const o = new Float32Array(B * T * H * dv), lse = new Float32Array(B * H * T), dout = rand(o.length, -1, 1, 10);
    const dq = new Float32Array(q.length), dk = new Float32Array(kk.length), dvv = new Float32Array(v.length);
    const pairs = B * H * ((T * (T + 1)) / 2);
    setup.attention(p, q, kk, v, o, lse);
    out.push({ op: 'attention', shape: [B, H, T, dqk, dv], flops: pairs * 2 * (dqk + dv), run: (k) => k.attention(p, q, kk, v, o, lse) });
    out.push({
      op: 'attentionBackward', shape: [B, H, T, dqk, dv], flops: pairs * 2 * (3 * dqk + 2 * dv),
      run: (k) => k.attentionBackward(p, q, kk, v, o, lse, dout, dq, dk, dvv),
    });
  }
  {
    // MLA absorbed decode: one latent K row per key shared by all heads, V = its first dv columns
    const [H, tk, dqk, dv] = [8, 1024, 80, 64];
    const p: AttentionParams = {
      batch: 1, heads: H, kvHeads: 1, tq: 1, tk, dqk, dv, scale: 1 / Math.sqrt(dqk), causalOffset: tk - 1,
      qStrides: [H * dqk, H * dqk, dqk], kStrides: [tk * dqk, dqk, dqk], vStrides: [tk * dqk, dqk, dqk],
      oStrides: [H * dv, H * dv, dv],
    };
    const q = rand(H * dqk, -1, 1, 11), kv = rand(tk * dqk, -1, 1, 12), o = new Float32Array(H * dv), lse = new Float32Array(H);
    out.push({ op: 'attention decode (absorbed)', shape: [1, H, 1, tk, dqk, dv], flops: H * tk * 2 * (dqk + dv), run: (k) => k.attention(p, q, kv, kv, o, lse) });
  }
  {
    const a = new Float32Array(64).fill(1), b = new Float32Array(64).fill(2), o = new Float32Array(64);
    out.push({ op: 'binary add x1000 (call overhead)', shape: [8, 8], calls: 1000, run: (k) => { for (let i = 0; i < 1000; i++) k.binary(0, a, b, o, 64); } });
  }
  return out;
}

const FLAGS = { json: bool(), 'no-reference': bool(), only: text() };

export const kernelsBench: Bench = {
  name: 'kernels',
  summary: 'native fused kernels (softmax, rmsNorm, SwiGLU, cross-entropy, attention) vs the reference',
  help: `Usage: dsv3 bench kernels [--json] [--no-reference] [--only NAME]

Times each native fused kernel against the pure-TypeScript reference and prints JSON lines
{bench, op, shape, native_ms, reference_ms, speedup, gbps|gflops|us_per_call, isa, threads}:
  softmax [8192,4096], rmsNorm [4096,256], siluMul 4M, crossEntropy [2048,4096] fwd+bwd,
  attention fwd and bwd at B=8,H=8,T=256,dqk=48,dv=32 (causal), absorbed MLA decode
  (B=1,H=8,tq=1,tk=1024,dqk=80,dv=64, kvHeads 1), and 1000 calls of an 8x8 add (the fixed
  per-call cost, reported as us_per_call).
Times are medians of warm runs (~0.3 s of native runs, 3 reference runs); a reference whose
warm-up run takes over 1 s is timed by that run alone.
Options:
  --json          JSON lines only (no table on stderr)
  --no-reference  skip the reference timings
  --only NAME     only the cases whose op contains NAME
Environment: DSV3_THREADS, DSV3_ISA as for every command.
`,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench kernels', argv, FLAGS);
    const native = loadNativeKernels();
    if (!native) throw new UsageError(`bench kernels needs the native addon: ${nativeLoadError() ?? 'unknown error'}`);
    const info = nativeAddon()!.info();
    const rows: string[] = [];
    for (const c of cases(native)) {
      if (values.only && !c.op.includes(values.only)) continue;
      const nativeMs = timeMs(() => c.run(native), 300);
      const refMs = values['no-reference'] ? null : timeMs(() => c.run(referenceKernels), 0);
      const line: Record<string, unknown> = {
        bench: 'kernels', op: c.op, shape: c.shape,
        native_ms: +nativeMs.toFixed(4), reference_ms: refMs === null ? null : +refMs.toFixed(3),
        speedup: refMs === null ? null : +(refMs / nativeMs).toFixed(1),
      };
      if (c.bytes !== undefined) line.gbps = +(c.bytes / nativeMs / 1e6).toFixed(2);
      if (c.flops !== undefined) line.gflops = +(c.flops / nativeMs / 1e6).toFixed(2);
      if (c.calls !== undefined) line.us_per_call = +((nativeMs * 1000) / c.calls).toFixed(3);
      line.isa = info.isa;
      line.threads = info.threads;
      process.stdout.write(JSON.stringify(line) + '\n');
      rows.push(`${c.op.padEnd(28)} ${JSON.stringify(c.shape).padEnd(22)} native ${nativeMs.toFixed(3).padStart(9)} ms  ` +
        `ref ${refMs === null ? '-' : refMs.toFixed(1).padStart(8) + ' ms'}  ` +
        `${line.speedup === null ? '' : String(line.speedup) + 'x  '}` +
        (line.gbps !== undefined ? `${line.gbps} GB/s` : line.gflops !== undefined ? `${line.gflops} GFLOP/s` : `${line.us_per_call} us/call`));
    }
    if (!values.json) process.stderr.write(`\nnative isa ${info.isa}, ${info.threads} threads\n${rows.join('\n')}\n`);
  },
};
