// CPU time of the small-m float32 GEMMs of a batched decode step on bench-small's shapes
// (x[m, k] W^T, W [n, k]: the LM head 4096 x 256, q_b 384 x 128, o_proj 256 x 256, the dense
// MLP's gate/up 768 x 256 and down 256 x 768, q_a 128 x 256) at m = 2 and 8, one thread.
// Prints one JSON line: microseconds of CPU per call (second best of 5 timed batches).
// A/B of two builds: run it once per addon, alternating, e.g.
//   for r in 1 2; do for a in /work/main /work/wt-batch6; do DSV3_ADDON=$a/build/Release/dsv3.node \
//     node scripts/bench-gemm-rows.mjs .; done; done
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
const root = resolve(process.argv[2] ?? '.');
const { nativeAddon } = await import(pathToFileURL(root + '/dist/src/engine/native.js').href);
const A = nativeAddon();
if (!A) throw new Error('bench-gemm-rows: the native addon did not load');
A.setThreads(1);
const shapes = [[4096, 256], [384, 128], [256, 256], [768, 256], [256, 768], [128, 256]];
const out = { addon: process.env.DSV3_ADDON ?? 'build/Release/dsv3.node' };
for (const m of [2, 8]) for (const [n, k] of shapes) {
  const w = Float32Array.from({ length: n * k }, () => Math.random() - 0.5);
  const x = Float32Array.from({ length: m * k }, () => Math.random() - 0.5);
  const c = new Float32Array(m * n);
  const reps = Math.max(20, Math.round(2e8 / (n * k * m)));
  for (let i = 0; i < reps; i++) A.gemmF32(false, true, m, n, k, 1, x, k, w, k, 0, c, n);
  const t = [];
  for (let r = 0; r < 5; r++) {
    const c0 = process.cpuUsage();
    for (let i = 0; i < reps; i++) A.gemmF32(false, true, m, n, k, 1, x, k, w, k, 0, c, n);
    const d = process.cpuUsage(c0);
    t.push((d.user + d.system) / reps);
  }
  t.sort((a, b) => a - b);
  out[`m${m} ${n}x${k}`] = +t[1].toFixed(2);
}
console.log(JSON.stringify(out));
