/**
 * The plain sequential run a pipeline step must match (docs/DUALPIPE.md §10, fixtures/dualpipe
 * README "Checking an implementation"): one DeepseekV3 model, `forwardLosses` and backward on
 * each micro-batch of the same split, with the same loss scale, gradients accumulated.
 */
import assert from 'node:assert/strict';
import { scale } from '../../src/engine/ops/index.js';
import { DeepseekV3 } from '../../src/model/model.js';
import type { ModelConfig } from '../../src/model/config.js';
import { splitMicroBatches } from '../../src/parallel/executor.js';
import type { StageLossOptions } from '../../src/parallel/stages.js';
import { lossReport, type LossReport } from '../../src/objective/losses.js';
import { forwardLosses } from '../../src/train/train-step.js';
import { backward } from '../../src/engine/autograd.js';

export interface SequentialRun {
  losses: LossReport[];
  grads: Map<string, Float32Array>;
  loads: Map<number, Int32Array>;
}

export function sequentialRun(model: DeepseekV3, tokens: Int32Array, rows: number, microbatches: number, o: StageLossOptions): SequentialRun {
  const losses: LossReport[] = [];
  const loads = new Map<number, Int32Array>();
  for (const mb of splitMicroBatches(tokens, rows, microbatches, model.cfg.vocab_size)) {
    const f = forwardLosses(model, mb.tokens, { mtpLambda: o.mtpLambda, balanceAlpha: o.balanceAlpha, balance: o.balance }, mb.B);
    losses.push(lossReport(f.terms));
    const s = o.lossScale ?? 1;
    backward((s === 1 ? f.terms.total : scale(f.terms.total, s)));
    for (const [l, r] of f.routing) {
      const acc = loads.get(l);
      if (acc) for (let e = 0; e < acc.length; e++) acc[e]! += r.load[e]!;
      else loads.set(l, r.load.slice());
    }
  }
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of model.params) grads.set(name, p.grad ? p.grad.contiguous().f32().slice() : new Float32Array(p.size));
  return { losses, grads, loads };
}

export function sequentialModel(cfg: ModelConfig, seed: number): DeepseekV3 {
  return DeepseekV3.randomInit(cfg, seed);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/**
 * Per-parameter check: max |got - want| <= rel * max |want| of that parameter (float32: the two
 * runs do the same arithmetic per micro-batch and differ only in the order gradients are summed
 * over micro-batches, replicas and deferred W closures). Returns the worst ratio seen.
 */
export function assertGradsClose(got: Map<string, Float32Array>, want: Map<string, Float32Array>, rel: number, what: string): number {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), `${what}: parameter names`);
  let worst = 0;
  for (const [name, w] of want) {
    const g = got.get(name)!;
    assert.equal(g.length, w.length, `${what}: ${name} size`);
    const m = maxAbs(w);
    let d = 0;
    for (let i = 0; i < w.length; i++) d = Math.max(d, Math.abs(g[i]! - w[i]!));
    if (m === 0) {
      // an expert no token of the batch was routed to: no gradient on either side
      assert.equal(d, 0, `${what}: ${name} has a zero reference gradient but got max |g| ${maxAbs(g)}`);
      continue;
    }
    worst = Math.max(worst, d / m);
    assert.ok(d <= rel * m, `${what}: gradient of ${name} differs by ${d.toExponential(3)} (max |g| ${m.toExponential(3)}, ratio ${(d / m).toExponential(3)} > ${rel})`);
  }
  return worst;
}

/** Loss reports equal within `rel` (relative to each value; balance per layer too). */
export function assertLossesClose(got: readonly LossReport[], want: readonly LossReport[], rel: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: micro-batch count`);
  const close = (a: number, b: number, k: string): void => {
    assert.ok(Math.abs(a - b) <= rel * Math.max(Math.abs(b), 1e-12), `${what}: ${k} ${a} vs ${b}`);
  };
  for (let j = 0; j < want.length; j++) {
    const a = got[j]!;
    const b = want[j]!;
    close(a.total, b.total, `mb ${j} total`);
    close(a.lm, b.lm, `mb ${j} lm`);
    close(a.mtp_weighted, b.mtp_weighted, `mb ${j} mtp_weighted`);
    close(a.balance_total, b.balance_total, `mb ${j} balance_total`);
    assert.deepEqual(Object.keys(a.balance_per_layer).sort(), Object.keys(b.balance_per_layer).sort(), `${what}: mb ${j} balance layers`);
    for (const k of Object.keys(b.balance_per_layer)) close(a.balance_per_layer[k]!, b.balance_per_layer[k]!, `mb ${j} balance layer ${k}`);
    assert.equal(a.mtp_depth_mean_ce.length, b.mtp_depth_mean_ce.length);
    a.mtp_depth_mean_ce.forEach((v, i) => close(v, b.mtp_depth_mean_ce[i]!, `mb ${j} mtp depth ${i + 1}`));
  }
}
