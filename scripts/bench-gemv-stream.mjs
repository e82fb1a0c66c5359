#!/usr/bin/env node
// Batch-1 decode GEMV streaming rate (issue 12): one token's routed experts at the
// DeepSeek-V2-Lite shape (D 2048, 6 experts of 1408) through Kernels.moeRowBf16 / moeRowFp8, over
// a ~1 GB weight set (groups of 6 experts in rotation, so nothing is served from cache).
// Prints JSON: weight GB per CPU-second (per-thread streaming rate) and per wall second.
//   node scripts/bench-gemv-stream.mjs [--kind bf16|fp8] [--threads T] [--reps N] [--gb G]
// A/B: DSV3_ADDON=/path/to/other/dsv3.node selects another build of the addon.
import { createRequire } from 'node:module';
import { nativeAddonPath } from '../dist/src/engine/native.js';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const kind = args.kind ?? 'bf16';
const threads = Number(args.threads ?? 1);
const reps = Number(args.reps ?? 5);
const gb = Number(args.gb ?? 1);
const addon = createRequire(import.meta.url)(nativeAddonPath());
addon.setThreads(threads);
if (args.isa) addon.setIsa(args.isa);
const D = 2048, I = 1408, E = 6;
const bpw = kind === 'bf16' ? 2 : 1;
const perGroup = E * 3 * D * I * bpw;
const groups = Math.max(1, Math.round((gb * 1e9) / perGroup));
let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
const sets = [];
for (let g = 0; g < groups; g++) {
  const w = [], s = [];
  for (let e = 0; e < E; e++)
    for (const [rows, cols] of [[I, D], [I, D], [D, I]]) {
      if (kind === 'bf16') {
        const a = new Uint16Array(rows * cols);
        for (let q = 0; q < a.length; q++) a[q] = 0x3c00 + ((rnd() * 512) | 0) - 256 + (q & 1 ? 0x8000 : 0);
        w.push(a);
      } else {
        const a = new Uint8Array(rows * cols);
        for (let q = 0; q < a.length; q++) a[q] = (rnd() * 256) & 0xf7 | 0x00; // avoid 0x7f/0xff NaN codes
        w.push(a);
        s.push(Float32Array.from({ length: Math.ceil(rows / 128) * Math.ceil(cols / 128) }, () => 1e-3 * (0.5 + rnd())));
      }
    }
  sets.push({ w, s });
}
const inters = Int32Array.from({ length: E }, () => I);
const alphas = Float32Array.from({ length: E }, () => 0.1 + rnd());
const x = Float32Array.from({ length: D }, () => rnd() - 0.5);
const h = new Float32Array(D);
const scratch = new Float32Array(5 * E * I + 2 * D + 64);
const call = (g) => kind === 'bf16'
  ? addon.moeRowBf16(D, inters, alphas, sets[g].w, x, h, scratch)
  : addon.moeRowFp8(D, inters, alphas, sets[g].w, sets[g].s, x, h, scratch);
for (let g = 0; g < groups; g++) call(g); // warm (page faults)
const cpu = [], wall = [];
for (let r = 0; r < reps; r++) {
  const c0 = process.cpuUsage(), t0 = process.hrtime.bigint();
  for (let g = 0; g < groups; g++) call(g);
  const c = process.cpuUsage(c0), t = Number(process.hrtime.bigint() - t0) / 1e9;
  cpu.push((c.user + c.system) / 1e6); wall.push(t);
}
const med = (a) => [...a].sort((p, q) => p - q)[a.length >> 1];
const bytes = groups * perGroup;
console.log(JSON.stringify({ kind, threads, addon: nativeAddonPath(), isa: addon.info().isa, gb: +(bytes / 1e9).toFixed(3),
  gb_per_cpu_s: +(bytes / 1e9 / med(cpu)).toFixed(2), gb_per_wall_s: +(bytes / 1e9 / med(wall)).toFixed(2), checksum: h.reduce((a, b) => a + b, 0) }));
