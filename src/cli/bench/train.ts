/**
 * `dsv3 bench train`: training throughput of a DeepSeek-V3-architecture model on this CPU.
 * Runs full training steps (forward with MTP, L_Main + L_MTP + L_Bal, backward, clipping, AdamW,
 * bias update) on seeded random tokens and reports tokens/s, the median step time, the peak RSS
 * and where a step's time goes: forward / backward / optimizer (+ bias update), and per kernel
 * (the kernels are timed through a wrapping backend; the rest is JavaScript: autograd, routing,
 * dispatch, indexing).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../../engine/native.js';
import { kernels, useBackend } from '../../engine/backend.js';
import { stepArena, withArena } from '../../engine/active-arena.js';
import type { Kernels } from '../../engine/kernels.js';
import { Rng } from '../../data/rng.js';
import { loadModelConfig } from '../../model/config.js';
import { DeepseekV3 } from '../../model/model.js';
import { backward } from '../../engine/autograd.js';
import { AdamW } from '../../train/optimizer.js';
import { PAPER, TRAIN, defaultMomentDtype } from '../../train/recipe.js';
import { applyUpdate, forwardLosses } from '../../train/train-step.js';
import type { Bench } from '../command.js';
import { bool, exists, int, oneOf, parseFlags, precision, resolvePrecision } from '../flags.js';
import { median } from '../../data/stats.js';

const HELP = `Usage: dsv3 bench train [--config FILE] [--batch B] [--seq S] [--steps N] [--warmup-steps W] [--precision fp32|bf16|fp8] [--fp8] [--moment-dtype f32|bf16] [--json]

Times full training steps of the model in FILE (default configs/bench-small.json) on batches of
B x S random tokens (default 8 x 256) for N steps (default 20) after W untimed warmup steps
(default 8: V8's optimising compiler is still at work in the background until about the 8th step
of a process, so fewer warmup steps time part of the compilation). Prints one JSON line:
  {bench, backend, params, tokens_per_s, step_ms_median, step_ms_min, cpu_ms_per_step_median, peak_rss_mb,
   breakdown_ms: {forward, backward, optimizer}, kernels_ms: {...}, other_ms, loss_first, loss_last}
(breakdown and kernel times are per step, averaged; cpu_ms_per_step_median is the process's
CPU time per step, user + system, all threads: on a shared machine it moves less than wall time;
with DSV3_THREADS=1 it is the work of a step), and a table on stderr unless --json.
--precision bf16 times BF16 mixed-precision steps (\`dsv3 train --precision bf16\`): bf16 GEMM
operands with float32 accumulation for every Linear, the experts, the output head and (where the
CPU has VDPBF16PS) the attention core's matmuls; the JSON says "precision". --precision fp8 is --fp8.
--fp8 times FP8 mixed-precision steps (\`dsv3 train --fp8\`, paper section 3.3): the covered
Linears' GEMMs on E4M3 operands (bf16 dot products on the codes, N_C = 128 promotion) and BF16
AdamW moments; the JSON says "fp8": true and "moment_dtype".
--moment-dtype f32|bf16 sets the AdamW moment storage; the default is \`dsv3 train\`'s: bf16 under
--precision bf16 and fp8 (changed for bf16 on 2026-12-07, issue 13: peak RSS), f32 under fp32.
Like \`dsv3 train\`, steps allocate their activations from a step arena that is reused from one
step to the next (src/engine/arena.ts); DSV3_ARENA=0 in the environment turns it off.
`;

const DEFAULT_CONFIG = 'configs/bench-small.json';

/** A Kernels wrapper that accumulates the wall time of every call by kernel name. */
function timedKernels(inner: Kernels, acc: Map<string, number>): Kernels {
  const out: Record<string, unknown> = { name: inner.name };
  for (const key of Object.keys(inner) as (keyof Kernels)[]) {
    const f = inner[key];
    if (typeof f !== 'function') continue;
    out[key] = (...args: unknown[]): unknown => {
      const t = performance.now();
      try {
        return (f as (...a: unknown[]) => unknown).apply(inner, args);
      } finally {
        acc.set(key, (acc.get(key) ?? 0) + performance.now() - t);
      }
    };
  }
  return out as unknown as Kernels;
}

const r1 = (x: number): number => Math.round(x * 10) / 10;

const FLAGS = { config: exists('model config', 'file'), batch: int(1), seq: int(1), steps: int(1), 'warmup-steps': int(0), fp8: bool(), precision: precision(), 'moment-dtype': oneOf(['f32', 'bf16'] as const), json: bool() };

export const trainBench: Bench = {
  name: 'train',
  summary: 'training throughput (tokens/s, step time, peak RSS, forward/backward/optimizer split)',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench train', argv, FLAGS);
    // the default config ships with the package: found from any working directory
    const cfgPath = values.config ?? (fs.existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : path.join(packageRoot(), DEFAULT_CONFIG));
    const cfg = loadModelConfig(cfgPath);
    const [B, S, steps, warm] = [values.batch ?? 8, values.seq ?? 256, values.steps ?? 20, values['warmup-steps'] ?? 8];
    const model = DeepseekV3.randomInit(cfg, 0);
    const params = model.parameters().reduce((a, p) => a + p.size, 0);
    const rng = new Rng(1);
    const base = kernels();
    const kacc = new Map<string, number>();
    const stepMs: number[] = [];
    const cpuMs: number[] = []; // process CPU time (user + system) per timed step
    const phase = { forward: 0, backward: 0, optimizer: 0 };
    let lossFirst = NaN;
    let lossLast = NaN;
    const prec = resolvePrecision(values);
    const fp8 = prec === 'fp8';
    const opt = new AdamW(model.parameters(), { lr: 1e-4, momentDtype: values['moment-dtype'] ?? defaultMomentDtype(prec) }); // as `dsv3 train`: BF16 moments under fp8 and bf16
    const lossOpts = { mtpLambda: PAPER.mtpLambda, balanceAlpha: PAPER.balanceAlpha, balance: TRAIN.balance, precision: prec };
    const arena = stepArena(); // as the trainer: activations reused across steps
    for (let i = 0; i < warm + steps; i++) {
      const timed = i >= warm;
      if (timed && i === warm) useBackend(timedKernels(base, kacc));
      const tokens = Int32Array.from({ length: B * (S + 1) }, () => rng.nextInt(cfg.vocab_size));
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const { t1, t2, loss } = withArena(arena, () => {
        const f = forwardLosses(model, tokens, lossOpts, B);
        const t1 = performance.now();
        backward(f.terms.total);
        const t2 = performance.now();
        const loads = new Map([...f.routing].map(([l, r]) => [l, r.load] as const));
        applyUpdate(model, opt, loads, { lr: 1e-4, maxGradNorm: PAPER.maxGradNorm, balance: TRAIN.balance, bias: { gamma: PAPER.biasGamma } });
        return { t1, t2, loss: f.terms.total.item() };
      });
      arena?.reset();
      const t3 = performance.now();
      if (i === 0) lossFirst = loss;
      lossLast = loss;
      if (!timed) continue;
      phase.forward += t1 - t0;
      phase.backward += t2 - t1;
      phase.optimizer += t3 - t2;
      stepMs.push(t3 - t0);
      const c1 = process.cpuUsage(c0);
      cpuMs.push((c1.user + c1.system) / 1000);
    }
    arena?.trim();
    useBackend(base);
    const total = stepMs.reduce((a, b) => a + b, 0);
    const kernelsMs: Record<string, number> = {};
    let kSum = 0;
    for (const [k, v] of [...kacc].sort((a, b) => b[1] - a[1])) {
      kernelsMs[k] = r1(v / steps);
      kSum += v;
    }
    const result = {
      bench: 'train',
      backend: base.name,
      config: cfgPath,
      batch: B,
      seq: S,
      steps,
      fp8,
      precision: prec,
      moment_dtype: opt.momentDtype,
      params,
      tokens_per_s: Math.round((B * S * steps) / (total / 1000)),
      step_ms_median: r1(median(stepMs)),
      step_ms_min: r1(Math.min(...stepMs)),
      cpu_ms_per_step_median: r1(median(cpuMs)),
      peak_rss_mb: r1(process.resourceUsage().maxRSS / 1024),
      breakdown_ms: { forward: r1(phase.forward / steps), backward: r1(phase.backward / steps), optimizer: r1(phase.optimizer / steps) },
      kernels_ms: kernelsMs,
      other_ms: r1((total - kSum) / steps),
      loss_first: lossFirst,
      loss_last: lossLast,
    };
    process.stdout.write(JSON.stringify(result) + '\n');
    if (!values.json) {
      const per = total / steps;
      const line = (k: string, ms: number): string => `  ${k.padEnd(22)} ${ms.toFixed(1).padStart(9)} ms  ${((100 * ms) / per).toFixed(1).padStart(5)}%\n`;
      let txt = `train${prec !== 'fp32' ? ` (${prec.toUpperCase()})` : ''}: ${params.toLocaleString('en-US')} params, ${B}x${S} tokens/step, ${result.tokens_per_s} tokens/s, median step ${result.step_ms_median} ms, peak RSS ${result.peak_rss_mb} MB\n`;
      txt += 'per step:\n' + line('forward', phase.forward / steps) + line('backward', phase.backward / steps) + line('optimizer+bias', phase.optimizer / steps);
      txt += 'by kernel:\n' + Object.entries(kernelsMs).map(([k, v]) => line(k, v)).join('') + line('(JS: autograd, routing, ...)', (total - kSum) / steps);
      process.stderr.write(txt);
    }
  },
};
