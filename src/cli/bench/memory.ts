/**
 * `dsv3 bench memory`: memory must stay flat over a long training loop. Trains a small SwiGLU
 * MLP classifier with AdamW for N steps and reports the resident set size (RSS), the JS heap and
 * the external (typed-array) memory at step 100 and at the last step. Intermediates are plain
 * typed arrays owned by the graph; backward() frees each node as it goes and V8 reclaims the
 * buffers, so RSS after 1,000 steps should equal RSS after 100 within noise.
 */
import { Tensor } from '../../engine/tensor.js';
import { backward, noGrad } from '../../engine/autograd.js';
import * as ops from '../../engine/ops/index.js';
import { kernels } from '../../engine/backend.js';
import { AdamW } from '../../train/optimizer.js';
import type { Bench } from '../command.js';
import { bool, int, parseFlags } from '../flags.js';
import { Rng } from '../../data/rng.js';

function randn(n: number, std: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.nextNormal() * std);
}

const FLAGS = { steps: int(101), json: bool() };

const mb = (x: number): number => Math.round((x / 1048576) * 10) / 10;

export const memoryBench: Bench = {
  name: 'memory',
  summary: 'RSS over a long training loop of a small MLP (flat memory check)',
  help: `Usage: dsv3 bench memory [--steps N] [--json]

Trains a SwiGLU MLP (256 -> 1024 -> 512 classes, batch 128) with AdamW and prints
{bench, step, rss_mb, heap_mb, external_mb} at step 100 and at step N (default 1000), then the
ratio rss(N)/rss(100).
`,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench memory', argv, FLAGS);
    const steps = values.steps ?? 1000;
    const d = 256;
    const h = 1024;
    const classes = 512;
    const batch = 128;
    const w1 = Tensor.param(randn(h * d, 0.05, 1), [h, d], 'w1');
    const w2 = Tensor.param(randn(h * d, 0.05, 2), [h, d], 'w2');
    const w3 = Tensor.param(randn(classes * h, 0.03, 3), [classes, h], 'w3');
    const opt = new AdamW([w1, w2, w3], { lr: 1e-3 });
    const x = Tensor.fromF32(randn(batch * d, 1, 4), [batch, d]);
    const targets = Int32Array.from({ length: batch }, (_, i) => (i * 37) % classes);
    const samples: Record<string, number>[] = [];
    const t0 = performance.now();
    let loss = 0;
    for (let step = 1; step <= steps; step++) {
      for (const p of [w1, w2, w3]) p.grad = null;
      const hid = ops.swiglu(ops.linear(x, w1), ops.linear(x, w2));
      const l = ops.crossEntropy(ops.linear(hid, w3), targets);
      backward(l);
      noGrad(() => opt.step());
      loss = l.item();
      if (step === 100 || step === steps) {
        const m = process.memoryUsage();
        samples.push({ step, rss_mb: mb(m.rss), heap_mb: mb(m.heapUsed), external_mb: mb(m.external + m.arrayBuffers), loss });
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    for (const s of samples) process.stdout.write(JSON.stringify({ bench: 'memory', backend: kernels().name, ...s }) + '\n');
    const ratio = samples[1]!.rss_mb! / samples[0]!.rss_mb!;
    process.stdout.write(JSON.stringify({ bench: 'memory', rss_ratio: Math.round(ratio * 1000) / 1000, steps, seconds: Math.round(seconds * 10) / 10 }) + '\n');
    if (!values.json) process.stderr.write(`RSS at step 100: ${samples[0]!.rss_mb} MB, at step ${steps}: ${samples[1]!.rss_mb} MB (ratio ${ratio.toFixed(3)}), final loss ${loss.toFixed(4)}\n`);
  },
};
