// Per-kernel CPU time of the bf16 and fp8 training steps of one build, interleaved step by step in ONE
// process (configs/bench-small.json, 8x256 tokens, bench train's step): every kernel call is timed with
// process.cpuUsage (so it counts the work, not the waits of a shared machine), per kernel name, or with
// `detail` per kernel and shape. Prints the CPU ms per step of each precision, their ratio, and a
// bf16 | fp8 table of kernel ms per step and calls per step. Needs a build (npm run build + the addon).
//   DSV3_THREADS=1 node scripts/profile-fp8-vs-bf16.mjs ROOT [STEPS] [detail]
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
const root = resolve(process.argv[2] ?? '.'), steps = Number(process.argv[3] ?? 4), detail = process.argv[4] === 'detail';
const imp = (p) => import(pathToFileURL(root + '/dist/src/' + p).href);
const { stepArena, withArena } = await imp('engine/arena.js');
const { loadModelConfig } = await imp('model/config.js');
const { DeepseekV3 } = await imp('model/model.js');
const { backward } = await imp('engine/autograd.js');
const { AdamW } = await imp('train/optimizer.js');
const { PAPER, TRAIN } = await imp('train/recipe.js');
const { applyUpdate, forwardLosses } = await imp('train/train-step.js');
const { kernels, useBackend } = await imp('engine/backend.js');
const cfg = loadModelConfig(root + '/configs/bench-small.json');
const B = 8, S = 256;
const base = kernels();
let acc = null;
const cpu = () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };
const wrapped = { name: base.name };
for (const key of Object.keys(base)) {
  const f = base[key];
  if (typeof f !== 'function') continue;
  wrapped[key] = (...args) => {
    if (!acc) return f.apply(base, args);
    const t = cpu();
    try { return f.apply(base, args); } finally {
      let k = key;
      if (detail) {
        if (key === 'fp8Gemm') k += ` ${args[0]}x${args[1]}x${args[2]} L${args[5]}${args[8]} b${args[9]}`;
        if (key === 'gemmBf16Ab' || key==='gemmBf16') k += ` ${args[0]?'T':'N'}${args[1]?'T':'N'} ${args[2]}x${args[3]}x${args[4]} b${args[10]}`;
        if (key.startsWith('fp8Quant')) k += ` ${args[2]}x${args[3]}${args[4]?' c':''}${args[6]?' o':''}`;
        if (key === 'fp8GemmBatch') { const d = args[0]; let s=0; for (let i=0;i<d.length;i+=3) s+=d[i]; k += ` x${d.length/3} M${s} n${d[1]} k${d[2]} L${args[3]}${args[6]} b${args[7]}`; }
        if (key === 'gemmBatchBf16Ab' || key==='gemmBatchBf16') { const d = args[2]; let s=0; for (let i=0;i<d.length;i+=3) s+=d[i]; k += ` ${args[0]?'T':'N'}${args[1]?'T':'N'} x${d.length/3} M${s} n${d[1]} k${d[2]} b${args[8]}`; }
      }
      const e = acc.get(k) ?? [0, 0]; e[0] += cpu() - t; e[1]++; acc.set(k, e);
    }
  };
}
useBackend(wrapped);
const runners = [];
for (const prec of ['bf16', 'fp8']) {
  const model = DeepseekV3.randomInit(cfg, 0);
  const opt = new AdamW(model.parameters(), { lr: 1e-4, ...(prec === 'fp8' ? { momentDtype: 'bf16' } : {}) });
  const arena = stepArena();
  const lossOpts = { mtpLambda: PAPER.mtpLambda, balanceAlpha: PAPER.balanceAlpha, balance: TRAIN.balance, precision: prec };
  let i = 0;
  const r = { prec, acc: new Map(), cpu: [] };
  r.step = (on) => {
    const tokens = Int32Array.from({ length: B * (S + 1) }, (_, j) => (j * 7919 + i * 31) % cfg.vocab_size);
    i++;
    acc = on ? r.acc : null;
    const c0 = cpu();
    withArena(arena, () => {
      const f = forwardLosses(model, tokens, lossOpts, B);
      backward(f.terms.total);
      const loads = new Map([...f.routing].map(([l, rr]) => [l, rr.load]));
      applyUpdate(model, opt, loads, { lr: 1e-4, maxGradNorm: PAPER.maxGradNorm, balance: TRAIN.balance, bias: { gamma: PAPER.biasGamma } });
      f.terms.total.item();
    });
    arena?.reset();
    if (on) r.cpu.push(cpu() - c0);
    acc = null;
  };
  runners.push(r);
}
for (const r of runners) r.step(false);
for (let s = 0; s < steps; s++) for (const r of runners) r.step(true);
const med = (xs) => { const s = xs.slice().sort((a, b) => a - b); return s[s.length >> 1]; };
const [a, b] = runners;
const tot = (r) => [...r.acc.values()].reduce((x, e) => x + e[0], 0) / steps;
console.log(`cpu/step median bf16 ${med(a.cpu).toFixed(1)} fp8 ${med(b.cpu).toFixed(1)} ratio ${(med(b.cpu)/med(a.cpu)).toFixed(3)}; kernels bf16 ${tot(a).toFixed(1)} fp8 ${tot(b).toFixed(1)}`);
const keys = [...new Set([...a.acc.keys(), ...b.acc.keys()])];
const v = (r, k) => (r.acc.get(k)?.[0] ?? 0) / steps, n = (r, k) => (r.acc.get(k)?.[1] ?? 0) / steps;
keys.sort((x, y) => Math.max(v(b, y), v(a, y)) - Math.max(v(b, x), v(a, x)));
for (const k of keys) if (Math.max(v(a,k),v(b,k)) > 0.5) console.log(`${k.padEnd(50)} ${v(a, k).toFixed(1).padStart(7)} ${v(b, k).toFixed(1).padStart(7)}  n=${n(a,k)}/${n(b,k)}`);
