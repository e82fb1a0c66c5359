// Development tool (not part of the package): fp8Gemm (Kernels.fp8Gemm, the block-scaled FP8
// training GEMM) of two built checkouts side by side in ONE process, on the training shapes of
// configs/bench-small.json (2048 tokens) and 1024^3: best-of-REPS CPU time per call
// (process.cpuUsage; run with DSV3_THREADS=1), GFLOPS, new/base, and whether the two outputs are
// bit-identical (random finite codes, scales 2^-12..2^-3). The ISA is DSV3_ISA's, e.g.
//   DSV3_ISA=avx2 DSV3_THREADS=1 node scripts/bench-fp8-gemm-ab.mjs /work/main .
// Layouts (fp8_train.h): 0 rows x 1x128 tiles, 1 cols x 128x1 tiles, 2 / 3 128x128 blocks.
import { resolve } from 'node:path'; import { pathToFileURL } from 'node:url';
if (process.argv.length < 4) { console.error('usage: DSV3_THREADS=1 node scripts/bench-fp8-gemm-ab.mjs BASE_ROOT NEW_ROOT'); process.exit(2); }
const roots = process.argv.slice(2, 4).map((r) => resolve(r));
const adds = [];
for (const r of roots) { const { nativeAddon } = await import(pathToFileURL(r + '/dist/src/engine/native.js').href); const a = nativeAddon(); adds.push(a); }
const sc = (layout, rows, k) => { const nb = Math.ceil(k / 128); return layout < 2 ? rows * nb : Math.ceil(rows / 128) * nb; };
let s = 1; const rnd = () => { s = (s * 1103515245 + 12345) >>> 0; return s / 2 ** 32; };
const op = (rows, k, layout) => { const codes = new Uint8Array(rows * k); for (let i = 0; i < codes.length; i++) { const c = Math.floor(rnd() * 256); codes[i] = (c & 0x7f) === 0x7f ? 0 : c; }
  const scales = new Float32Array(sc(layout, rows, k)); for (let i = 0; i < scales.length; i++) scales[i] = 2 ** Math.floor(rnd() * 10 - 12); return { codes, scales, layout }; };
const cases = [ // name, m, n, k, la, lb
  ['fprop', 2048, 768, 256, 0, 2], ['fprop', 2048, 256, 768, 0, 2], ['dgrad', 2048, 256, 768, 0, 3], ['wgrad', 768, 256, 2048, 1, 1],
  ['fprop-exp', 512, 128, 256, 0, 2], ['wgrad-exp', 256, 128, 512, 1, 1], ['sq1024', 1024, 1024, 1024, 0, 2]];
const reps = Number(process.env.REPS ?? 5);
for (const [name, m, n, k, la, lb] of cases) {
  const a = op(m, k, la), b = op(n, k, lb);
  const cs = adds.map(() => new Float32Array(m * n));
  const best = adds.map(() => Infinity);
  const run = (i) => { const c0 = process.cpuUsage(); let it = 0; do { adds[i].fp8Gemm(m, n, k, a.codes, a.scales, la, b.codes, b.scales, lb, 0, cs[i], n); it++; } while ((process.cpuUsage(c0).user) < 20000); const c = process.cpuUsage(c0); return (c.user + c.system) / 1000 / it; };
  for (let r = 0; r < reps; r++) for (let i = 0; i < adds.length; i++) best[i] = Math.min(best[i], run(i));
  let same = true; for (let q = 0; q < m * n; q++) if (!Object.is(cs[0][q], cs[1][q])) { same = false; break; }
  const gf = (t) => (2 * m * n * k / t / 1e6).toFixed(1);
  console.log(name, m, n, k, `base ${best[0].toFixed(3)}ms ${gf(best[0])}GF  new ${best[1].toFixed(3)}ms ${gf(best[1])}GF  new/base ${(best[1] / best[0]).toFixed(3)} bits ${same ? 'identical' : 'DIFFER'}`);
}
