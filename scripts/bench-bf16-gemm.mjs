// Development tool (not part of the package): CPU time of the three GEMMs of one Linear (Fprop
// NT, Dgrad NN, Wgrad TN with a saved bf16 X) in fp32 and in bf16 (Kernels.gemmBf16) at the
// bench-small training shapes, best of 9 runs of 5 each. CPU time (process.cpuUsage) rather than
// wall time, so that a shared machine's load moves it less. Run after `npm run build`:
//   DSV3_THREADS=1 node scripts/bench-bf16-gemm.mjs        (DSV3_ISA=avx2 for the AVX2 copy)
import { loadNativeKernels, nativeAddon } from '../dist/src/engine/native.js';
const k = loadNativeKernels();
k.gemmBf16RoundPrepass = nativeAddon().gemmBf16RoundPrepass; // the test / benchmark hook (native only)
const rnd = (n) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
// [name, rows, in, out]
const L = [['q_a', 2048, 256, 128], ['q_b', 2048, 128, 384], ['kv_a', 2048, 256, 80], ['kv_b', 2048, 64, 512], ['o', 2048, 256, 256], ['ffn_up', 2048, 256, 768], ['ffn_down', 2048, 768, 256], ['expert_up', 512, 256, 128], ['expert_down', 512, 128, 256], ['head', 512, 256, 4096]];
const cpu = (f) => { let best = Infinity; for (let r = 0; r < 9; r++) { const c0 = process.cpuUsage(); f(); const c = process.cpuUsage(c0); best = Math.min(best, (c.user + c.system) / 1000); } return best; };
let T32 = 0, T16 = 0, T16p = 0;
for (const [name, M, K, N] of L) {
  const x = rnd(M * K), w = rnd(N * K), gy = rnd(M * N), y = new Float32Array(M * N), dx = new Float32Array(M * K), dw = new Float32Array(N * K);
  const wb = new Uint16Array(N * K); k.bf16Round(w, wb, N * K);
  const xb = new Uint16Array(M * K); k.bf16Round(x, xb, M * K);
  const rep = 5;
  const f32 = cpu(() => { for (let i = 0; i < rep; i++) { k.gemm(false, true, M, N, K, 1, x, K, w, K, 0, y, N); k.gemm(false, false, M, K, N, 1, gy, N, w, K, 0, dx, K); k.gemm(true, false, N, K, M, 1, gy, N, x, K, 0, dw, K); } }) / rep;
  const pre = k.gemmBf16RoundPrepass ? k.gemmBf16RoundPrepass(false) : true;
  const f16pack = cpu(() => { for (let i = 0; i < rep; i++) { k.gemmBf16(false, true, M, N, K, 1, x, K, wb, K, 0, y, N); k.gemmBf16(false, false, M, K, N, 1, gy, N, wb, K, 0, dx, K); k.gemmBf16(true, false, N, K, M, 1, gy, N, xb, K, 0, dw, K); } }) / rep;
  if (k.gemmBf16RoundPrepass) k.gemmBf16RoundPrepass(pre);
  const f16 = cpu(() => { for (let i = 0; i < rep; i++) { k.gemmBf16(false, true, M, N, K, 1, x, K, wb, K, 0, y, N); k.gemmBf16(false, false, M, K, N, 1, gy, N, wb, K, 0, dx, K); k.gemmBf16(true, false, N, K, M, 1, gy, N, xb, K, 0, dw, K); } }) / rep;
  const conv = cpu(() => { for (let i = 0; i < rep; i++) k.bf16Round(x, xb, M * K); }) / rep;
  T32 += f32; T16 += f16; T16p += f16pack;
  console.log(name.padEnd(12), 'fp32', f32.toFixed(2), 'bf16', f16.toFixed(2), 'x', (f32 / f16).toFixed(2), 'bf16 (round A in packing)', f16pack.toFixed(2), 'round x', conv.toFixed(3));
}
console.log('sum fp32', T32.toFixed(1), 'bf16', T16.toFixed(1), (T32 / T16).toFixed(2), 'bf16 rounding A in packing', T16p.toFixed(1), (T32 / T16p).toFixed(2));
