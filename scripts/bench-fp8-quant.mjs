// FP8 quantiser kernels alone: CPU ns per element of fp8QuantTiles1x128 / 128x1 (codes, values, both) and of
// fp8RequantTiles128x1 (rq128x1: the Wgrad X^T operand from the 1x128-tile copy) on one
// [rows, cols] (RC=rows,cols, default 2048,256), for a built checkout ROOT (default: this worktree):
//   DSV3_THREADS=1 RC=2048,256 node scripts/bench-fp8-quant.mjs [ROOT]
import { resolve } from 'node:path';
const root = resolve(process.argv[2] ?? '.');
const { kernels } = await import(root + '/dist/src/engine/backend.js');
const k = kernels();
const cpu = () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };
const [r, c] = (process.env.RC || "2048,256").split(",").map(Number);
const n = r * c;
const x = new Float32Array(n); for (let i = 0; i < n; i++) x[i] = Math.sin(i * 0.37) * (1 + (i % 97));
const codes = new Uint8Array(n), sc = new Float32Array(Math.ceil(r / 128) * c + r * Math.ceil(c / 128)), out = new Float32Array(n);
const c1 = new Uint8Array(n), s1 = new Float32Array(r * Math.ceil(c / 128));
k.fp8QuantTiles1x128(x, c, r, c, c1, s1, null);
const reps = Math.round(3e7 / n);
const t = (f) => { f(); const t0 = cpu(); for (let i = 0; i < reps; i++) f(); return ((cpu() - t0) / reps / n * 1e6).toFixed(3); };
const res = {};
for (let z = 0; z < 2; z++) Object.assign(res, {
  q1x128: t(() => k.fp8QuantTiles1x128(x, c, r, c, codes, sc, null)),
  q128x1: t(() => k.fp8QuantTiles128x1(x, c, r, c, codes, sc, null)),
  qdq1x128: t(() => k.fp8QuantTiles1x128(x, c, r, c, null, null, out)),
  both: t(() => k.fp8QuantTiles1x128(x, c, r, c, codes, sc, out)),
  rq128x1: t(() => k.fp8RequantTiles128x1(c1, s1, r, c, null, codes, sc)),
});
console.log(root.slice(-10), 'ns/elem', JSON.stringify(res));
