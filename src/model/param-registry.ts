/**
 * The parameters of a model (or of a pipeline rank): a ParamSource wrapper that hands out one
 * tensor per checkpoint name, whoever asks for it, and records what it handed out in module
 * order. Two modules asking for the same name share one tensor and so one gradient buffer: the
 * MTP modules and the main model share the embedding and the output head (paper §2.2), and a
 * pipeline rank holding two stages shares them between its stages (§3.2.3 "physical sharing").
 */
import { fmtShape, sameShape } from '../engine/layout.js';
import type { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { Init, ParamSource } from './params.js';
import type { LinearWeight } from './weights.js';

export class ParamRegistry implements ParamSource {
  /** Trainable float32 parameters by checkpoint name, in module order. */
  readonly params = new Map<string, Tensor>();
  /** Non-trainable tensors (the balance biases `e_score_correction_bias`) by name. */
  readonly buffers = new Map<string, Tensor>();
  /** Every linear weight by name, in whatever storage it was loaded. */
  readonly linears = new Map<string, LinearWeight>();
  /** Every name handed out, in module order (the checkpoint layout). */
  readonly order: string[] = [];

  constructor(private readonly inner: ParamSource) {}

  tensor(name: string, shape: readonly number[], init: Init, trainable = true): Tensor {
    const held = (trainable ? this.params : this.buffers).get(name);
    if (held) {
      if (!sameShape(held.shape, shape)) {
        throw new DsvError(`parameters: "${name}" is ${fmtShape(held.shape)} here but asked as ${fmtShape(shape)}`);
      }
      return held;
    }
    const t = this.inner.tensor(name, shape, init, trainable);
    (trainable ? this.params : this.buffers).set(name, t);
    this.order.push(name);
    return t;
  }

  linear(name: string, outFeatures: number, inFeatures: number): LinearWeight {
    const held = this.linears.get(name);
    if (held) {
      if (held.outFeatures !== outFeatures || held.inFeatures !== inFeatures) {
        throw new DsvError(`parameters: linear "${name}" is [${held.outFeatures}, ${held.inFeatures}] here but asked as [${outFeatures}, ${inFeatures}]`);
      }
      return held;
    }
    const w = this.inner.linear(name, outFeatures, inFeatures);
    this.linears.set(name, w);
    this.order.push(name);
    if (w.kind === 'f32' && w.weight.requiresGrad) this.params.set(name, w.weight);
    return w;
  }

  /** Clears every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.params.values()) p.grad = null;
  }
}
