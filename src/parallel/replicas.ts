/**
 * Parameters of pipeline ranks: where each rank's tensors come from, one tensor per name per
 * rank, and the gradient all-reduce between the copies of a parameter held by several ranks.
 *
 * A rank builds its stages from a `ParamSource` wrapped in a `ParamRegistry` (model/), which
 * hands out one tensor per checkpoint name on that rank: when a rank holds two stages that both use a tensor
 * (DualPipe/DualPipeV: stage 0's embedding and the last stage's MTP embedding, docs/DUALPIPE.md §2.4
 * and the paper §3.2.3 "physical sharing of parameters and gradients"), both use the same
 * tensor and accumulate into one gradient buffer.
 *
 * A name held by several ranks is a replica set: every stage of DualPipe (docs/DUALPIPE.md §2.2, the
 * paper's "two copies of the model parameters", §3.2.1), and under 1F1B/ZB1P the embedding (and
 * a tied head) that the last rank needs for MTP while rank 0 owns it (the Megatron-LM treatment
 * of tied embeddings across pipeline stages). Replicas start identical (same source), each sees
 * only its own micro-batches, and `allReduceGrads` sums their gradients after the step (§2.2) so
 * that every copy holds the one-model gradient and identical updates keep them identical.
 */
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { DeepseekV3 } from '../model/model.js';
import type { ParamRegistry } from '../model/param-registry.js';
import type { ParamSource } from '../model/params.js';
import { f32Linear, type LinearWeight } from '../model/weights.js';
import { fmtShape, sameShape } from '../engine/layout.js';

/**
 * A ParamSource cutting an existing model: hands out copies of `model`'s tensors by name (float32
 * weights copied, so each rank owns its replica; bf16/FP8 linears are frozen and shared
 * read-only). Use it to place a loaded checkpoint on pipeline ranks.
 */
export function modelParamSource(model: DeepseekV3): ParamSource {
  const copyOf = (name: string, t: Tensor, shape: readonly number[], trainable: boolean): Tensor => {
    if (!sameShape(t.shape, shape)) throw new DsvError(`model parameter "${name}" is ${fmtShape(t.shape)}, a stage asks for ${fmtShape(shape)}`);
    return Tensor.param(t.contiguous().f32().slice(), shape, name, trainable);
  };
  return {
    tensor(name, shape, _init, trainable = true) {
      const t = (trainable ? model.params : model.buffers).get(name);
      if (!t) throw new DsvError(`the model has no ${trainable ? 'trainable parameter' : 'buffer'} "${name}" (was it loaded without MTP?)`);
      return copyOf(name, t, shape, trainable);
    },
    linear(name, outFeatures, inFeatures) {
      const w = model.linears.get(name);
      if (!w) throw new DsvError(`the model has no linear weight "${name}"`);
      if (w.outFeatures !== outFeatures || w.inFeatures !== inFeatures) {
        throw new DsvError(`model linear "${name}" is [${w.outFeatures}, ${w.inFeatures}], a stage asks for [${outFeatures}, ${inFeatures}]`);
      }
      if (w.kind !== 'f32') return w;
      return f32Linear(name, copyOf(name, w.weight, [outFeatures, inFeatures], w.weight.requiresGrad));
    },
  };
}

/**
 * Sums, for every parameter name, the gradients of all ranks holding that name (in rank order; a
 * missing gradient counts as zero), writes the sum into every holder's `.grad` (each its own
 * copy, as an all-reduce would) and returns the sums by name. docs/DUALPIPE.md §2.2.
 */
export function allReduceGrads(ranks: readonly ParamRegistry[]): Map<string, Float32Array> {
  const holders = new Map<string, Tensor[]>();
  for (const r of ranks) {
    for (const [name, p] of r.params) {
      const list = holders.get(name);
      if (list) {
        if (!sameShape(list[0]!.shape, p.shape)) throw new DsvError(`replicas of "${name}" disagree in shape: ${fmtShape(list[0]!.shape)} vs ${fmtShape(p.shape)}`);
        list.push(p);
      } else holders.set(name, [p]);
    }
  }
  const out = new Map<string, Float32Array>();
  for (const [name, ps] of holders) {
    const sum = new Float32Array(ps[0]!.size);
    for (const p of ps) {
      if (!p.grad) continue;
      const g = p.grad.contiguous().f32();
      for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! + g[i]!;
    }
    for (const p of ps) p.grad = Tensor.fromF32(sum.slice(), p.shape);
    out.set(name, sum);
  }
  return out;
}
