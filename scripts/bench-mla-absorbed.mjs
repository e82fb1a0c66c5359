#!/usr/bin/env node
// Batch-1 decode: MLA's absorbed per-head fp32 GEMVs at the DeepSeek-V2-Lite shape (issue 12):
// q_lat[h] = q^C[h] W^UK[h] (16 x (1 x 128) . [128][512], gemmBatch NN) and o[h] = W^UV[h] ctx[h]
// (16 x (1 x 512) . [128][512]^T, gemmBatch NT), as src/inference/mla.ts calls them, over 28
// layers' weights in rotation (~230 MB, so the weights come from memory as in decode).
// Prints JSON: ms per layer (CPU time) and GB/s of fp32 weights per CPU second.
//   DSV3_THREADS=T node scripts/bench-mla-absorbed.mjs [--reps N]
// A/B: DSV3_ADDON=/path/to/other/dsv3.node selects another build of the addon.
import { kernels } from '../dist/src/engine/backend.js';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const reps = Number(args.reps ?? 400);
const k = kernels();
const H = 16, r = 512, dn = 128, dv = 128, QW = 192, W = 576, L = 28;
// one [H][dn + dv][r] buffer per layer, W^UK[h] then W^UV[h], as the plan's decoded kv_b_proj
const uk = [], uv = [];
for (let l = 0; l < L; l++) {
  const kvB = new Float32Array(H * (dn + dv) * r).map((_, i) => ((i * 2654435761) % 1000) / 1e5);
  uk.push(Array.from({ length: H }, (_, h) => kvB.subarray(h * (dn + dv) * r)));
  uv.push(Array.from({ length: H }, (_, h) => kvB.subarray(h * (dn + dv) * r + dn * r)));
}
const q = new Float32Array(H * QW).fill(1), qcat = new Float32Array(H * W), ctx = new Float32Array(H * r).fill(1), o = new Float32Array(H * dv);
const view = (buf, stride) => Array.from({ length: H }, (_, h) => buf.subarray(h * stride));
const qHead = view(q, QW), qcatHead = view(qcat, W), ctxHead = view(ctx, r), oHead = view(o, dv);
const d1 = new Int32Array(3 * H), d2 = new Int32Array(3 * H);
for (let h = 0; h < H; h++) { d1.set([1, r, dn], 3 * h); d2.set([1, dv, r], 3 * h); }
const run = (which) => {
  const t0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) {
    const l = i % L;
    if (which === 'uk') k.gemmBatch(false, false, d1, 1, qHead, H * QW, uk[l], r, 0, qcatHead, H * W);
    else k.gemmBatch(false, true, d2, 1, ctxHead, H * r, uv[l], r, 0, oHead, H * dv);
  }
  const c = process.cpuUsage(t0);
  return (c.user + c.system) / 1000 / reps;
};
run('uk'); run('uv'); // warm-up
const ukMs = run('uk'), uvMs = run('uv');
const bytes = H * dn * r * 4;
console.log(JSON.stringify({ bench: 'mla-absorbed', uk_ms: +ukMs.toFixed(4), uv_ms: +uvMs.toFixed(4), per_layer_ms: +(ukMs + uvMs).toFixed(4),
  uk_gb_per_cpu_s: +(bytes / ukMs / 1e6).toFixed(1), uv_gb_per_cpu_s: +(bytes / uvMs / 1e6).toFixed(1) }));
