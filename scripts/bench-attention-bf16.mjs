// BF16 vs float32 attention core (issue 13), interleaved, CPU time per call (process.cpuUsage):
//   DSV3_THREADS=1 node scripts/bench-attention-bf16.mjs [B T H dqk dv] [reps]   (after npm run build)
// Default shape: bench-small's MLA naive attention in training, B 8, T 256, H 8, dqk 48, dv 32.
// Prints JSON: median CPU ms of forward and backward for each, and the bf16/fp32 ratios.
import { loadNativeKernels, nativeAddon } from '../dist/src/engine/native.js';

const a = process.argv.slice(2).map(Number);
const [B, T, H, dqk, dv] = a.length >= 5 ? a : [8, 256, 8, 48, 32];
const reps = a[5] ?? 15;
const k = loadNativeKernels();
if (!k) throw new Error('native addon not available');
const p = {
  batch: B, heads: H, kvHeads: H, tq: T, tk: T, dqk, dv, scale: 1 / Math.sqrt(dqk), causalOffset: 0,
  qStrides: [T * H * dqk, H * dqk, dqk], kStrides: [T * H * dqk, H * dqk, dqk], vStrides: [T * H * dv, H * dv, dv], oStrides: [T * H * dv, H * dv, dv],
};
let s = 7;
const f = (n) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 2);
const q = f(B * T * H * dqk), kk = f(B * T * H * dqk), v = f(B * T * H * dv), g = f(B * T * H * dv);
const out = new Float32Array(B * T * H * dv), lse = new Float32Array(B * H * T);
const dq = new Float32Array(q.length), dk = new Float32Array(kk.length), dvb = new Float32Array(v.length);
const cpu = (fn) => { const c0 = process.cpuUsage(); fn(); const c = process.cpuUsage(c0); return (c.user + c.system) / 1000; };
const variants = {
  fp32: { fwd: () => k.attention(p, q, kk, v, out, lse), bwd: () => k.attentionBackward(p, q, kk, v, out, lse, g, dq, dk, dvb) },
  bf16: { fwd: () => k.attentionBf16(p, q, kk, v, out, lse), bwd: () => k.attentionBackwardBf16(p, q, kk, v, out, lse, g, dq, dk, dvb) },
};
const t = { fp32: { fwd: [], bwd: [] }, bf16: { fwd: [], bwd: [] } };
for (let r = 0; r < reps + 2; r++) {
  for (const name of r % 2 ? ['fp32', 'bf16'] : ['bf16', 'fp32']) {
    const vv = variants[name];
    const tf = cpu(vv.fwd), tb = cpu(vv.bwd);
    if (r >= 2) { t[name].fwd.push(tf); t[name].bwd.push(tb); }
  }
}
const med = (x) => { const y = [...x].sort((a, b) => a - b); return y[y.length >> 1]; };
const res = { shape: { B, T, H, dqk, dv }, reps, info: nativeAddon().info() };
for (const n of ['fp32', 'bf16']) res[n] = { fwd_cpu_ms: med(t[n].fwd), bwd_cpu_ms: med(t[n].bwd) };
res.ratio_fwd = res.bf16.fwd_cpu_ms / res.fp32.fwd_cpu_ms;
res.ratio_bwd = res.bf16.bwd_cpu_ms / res.fp32.bwd_cpu_ms;
console.log(JSON.stringify(res));
