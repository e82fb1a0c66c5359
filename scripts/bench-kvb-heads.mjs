// Usage (after npm run build): DSV3_THREADS=1 node scripts/bench-kvb-heads.mjs   (issue 12; BENCHMARKS.md, round 6 wt-decode6)
// Per-head W^UK / W^UV GEMMs at the V2-Lite shape: float32 copy (gemmBatch) vs bf16 bits (gemmBatchBf16),
// 7 layers' weights (56 MiB f32 / 28 MiB bf16: past L3), M rows, CPU ms per pass over the 7 layers.
import { kernels } from '../dist/src/engine/backend.js';
const K = kernels();
const H = 16, dn = 128, dv = 128, r = 512, L = 7, block = (dn + dv) * r;
const f32 = Array.from({ length: L }, () => Float32Array.from({ length: H * block }, () => Math.random() - 0.5));
const bits = f32.map((w) => { const b = new Uint16Array(w.length); K.bf16Round(w, b, w.length); return b; });
const cpu = () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };
for (const M of [1, 4]) {
  const q = new Float32Array(M * H * (dn + 64)).map(() => Math.random()), ctx = new Float32Array(M * H * r).map(() => Math.random());
  const qcat = new Float32Array(M * H * (r + 64)), o = new Float32Array(M * H * dv);
  const qH = Array.from({ length: H }, (_, h) => q.subarray(h * (dn + 64))), cH = Array.from({ length: H }, (_, h) => ctx.subarray(h * r));
  const qcH = Array.from({ length: H }, (_, h) => qcat.subarray(h * (r + 64))), oH = Array.from({ length: H }, (_, h) => o.subarray(h * dv));
  const d1 = new Int32Array(3 * H), d2 = new Int32Array(3 * H);
  for (let h = 0; h < H; h++) { d1.set([M, r, dn], 3 * h); d2.set([M, dv, r], 3 * h); }
  const views = (arr, off) => arr.map((w) => Array.from({ length: H }, (_, h) => w.subarray(h * block + off)));
  const uf = views(f32, 0), vf = views(f32, dn * r), ub = views(bits, 0), vb = views(bits, dn * r);
  const pass = (bf) => { for (let l = 0; l < L; l++) {
    if (bf) { K.gemmBatchBf16(false, false, d1, 1, qH, H * (dn + 64), ub[l], r, 0, qcH, H * (r + 64)); K.gemmBatchBf16(false, true, d2, 1, cH, H * r, vb[l], r, 0, oH, H * dv); }
    else { K.gemmBatch(false, false, d1, 1, qH, H * (dn + 64), uf[l], r, 0, qcH, H * (r + 64)); K.gemmBatch(false, true, d2, 1, cH, H * r, vf[l], r, 0, oH, H * dv); } } };
  const res = { f32: [], bf16: [] };
  for (let w = 0; w < 20; w++) { pass(false); pass(true); }
  for (let rep = 0; rep < 15; rep++) for (const bf of [false, true]) {
    const t = cpu(); for (let i = 0; i < 20; i++) pass(bf); res[bf ? 'bf16' : 'f32'].push((cpu() - t) / 20);
  }
  const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
  console.log(JSON.stringify({ M, f32_ms: +med(res.f32).toFixed(3), bf16_ms: +med(res.bf16).toFixed(3), ratio: +(med(res.bf16) / med(res.f32)).toFixed(3) }));
}
