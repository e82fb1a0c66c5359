/**
 * A DeepSeek-V3 model cut into pipeline stages (DeepSeek-V3 report §3.2.1; docs/DUALPIPE.md §2, §5).
 *
 * `stages` contiguous stages: stage 0 owns the embedding and the first layers, the last stage
 * the last layers, the final norm, the output head, the MTP modules and the loss (docs/DUALPIPE.md
 * §2.4). Each stage is built from a rank's `ParamRegistry`, so a rank holding two stages shares one
 * tensor per name between them (the paper's §3.2.3 sharing of embedding and head with MTP).
 * MTP embeds the shifted tokens with the main model's embedding (§2.4): under DualPipe/DualPipeV
 * the last stage's rank also holds stage 0, so it is the same tensor; under 1F1B/ZB1P (stage 0 on
 * rank 0, the last stage on rank PP−1) the last rank builds its own copy of the embedding (and of
 * a tied head), a replica whose gradient is summed with rank 0's after the step (replicas.ts).
 *
 * A stage is a `ModelPart` (model/model-part.ts): it runs the same forward pieces as the whole
 * model, and its last stage the same objective (objective/objective.ts, `headObjective`):
 * L = L_Main + L_MTP + L_Bal. L_Main and L_MTP (and the balance terms of the MTP layers) belong
 * to the last stage. The
 * balance term of an MoE layer depends only on that layer's routing, so each stage forms the
 * terms of its own layers and back-propagates them locally: a non-last stage ties their sum to
 * its output activation (`withSideLoss`: forward is the identity on the activation, backward
 * gives the activation the received gradient and the side loss a gradient of 1), so one
 * `backward(output, gradOut)` covers both. The step's loss for a micro-batch is the last stage's
 * value plus the balance values of the other stages: the same sum as the sequential loss, in a
 * different order of additions.
 *
 * Forward F(stage, input) returns the output activation (the receiver turns a copy into a fresh
 * leaf that requires grad) or, on the last stage, the loss. Backward B from the received output
 * gradient (or the loss) produces the input gradient (the input leaf's `.grad`); the split
 * backward b runs it inside `deferWeightGrads` and hands back the weight-gradient closures that a
 * later W runs (docs/DUALPIPE.md §5.1; ZeroBubble's B/W split).
 */
import { attach, backward } from '../engine/autograd.js';
import { add, deferWeightGrads, scale } from '../engine/ops/index.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { ModelPart } from '../model/model-part.js';
import type { ParamRegistry } from '../model/param-registry.js';
import type { Routing } from '../model/router.js';
import type { BalanceMode } from '../objective/balance.js';
import { lossReport, type LossReport } from '../objective/losses.js';
import { balanceTerms, headObjective, tokenBatch, type ObjectiveOptions } from '../objective/objective.js';

/** Loss settings of a pipeline step: the objective's, plus the loss scale. */
export interface StageLossOptions extends ObjectiveOptions {
  /** Factor applied to each micro-batch's loss before backward (e.g. 1/N to average; §3). */
  lossScale?: number;
}

/** One micro-batch: tokens [B, S+1] (ids are the first S columns, targets the shifted ones). */
export interface StageMicroBatch {
  tokens: Int32Array;
  B: number;
  S: number;
}

/** What F of a stage leaves for its backward and for the step's report. */
export interface StageForward {
  /** Where backward starts: the scaled loss (last stage) or the output activation. */
  root: Tensor;
  /** The input leaf (null on stage 0, whose input is token ids). */
  input: Tensor | null;
  /** The output activation [B, S, D] to hand to the next stage (null on the last stage). */
  output: Tensor | null;
  /** Unscaled balance-loss value of each of this stage's MoE layers (MTP layers included). */
  balance: Map<number, number>;
  /** Last stage: the loss report of its terms (its balance entries only). */
  report: LossReport | null;
  /** Expert loads of this stage's MoE layers (for the bias update). */
  loads: Map<number, Int32Array>;
}

/**
 * Layer ranges [start, end) of each stage: `counts` (one positive count per stage, summing to
 * num_hidden_layers) or an even split whose first `L mod stages` stages get one extra layer.
 */
export function stageLayerRanges(numLayers: number, stages: number, counts?: readonly number[]): [number, number][] {
  if (!Number.isInteger(stages) || stages < 1) throw new DsvError(`pipeline stages must be an integer >= 1, got ${stages}`);
  let c: number[];
  if (counts) {
    if (counts.length !== stages) throw new DsvError(`stage split: ${counts.length} layer counts given for ${stages} stages`);
    c = counts.slice();
  } else {
    if (numLayers < stages) throw new DsvError(`cannot cut ${numLayers} decoder layer(s) into ${stages} pipeline stages: every stage needs at least one layer`);
    c = Array.from({ length: stages }, (_, s) => Math.floor(numLayers / stages) + (s < numLayers % stages ? 1 : 0));
  }
  if (c.some((n) => !Number.isInteger(n) || n < 1)) throw new DsvError(`stage split [${c.join(', ')}]: every stage needs an integer number of layers >= 1`);
  const total = c.reduce((a, b) => a + b, 0);
  if (total !== numLayers) throw new DsvError(`stage split [${c.join(', ')}] covers ${total} layers, the model has ${numLayers}`);
  const out: [number, number][] = [];
  let at = 0;
  for (const n of c) {
    out.push([at, at + n]);
    at += n;
  }
  return out;
}

/** The activation `h` with the scalar `side` loss riding along: forward is h, backward sends
 * the gradient to h and 1 to side (the side loss is added to the objective as is). */
export function withSideLoss(h: Tensor, side: Tensor): Tensor {
  const out = new Tensor(h.data, h.shape, h.dtype, h.strides, h.offset);
  return attach(out, 'pipeline.side_loss', [h, side], (g) => [g, Tensor.full(side.shape, 1)]);
}

export interface StageBuildOptions {
  /** Layer counts per stage (default: even split). */
  split?: readonly number[];
  /** Build the MTP modules on the last stage (default true). */
  mtp?: boolean;
}

/** A stage: the part of the model holding its layers (model-part.ts), plus what only a stage does. */
export class PipelineStage extends ModelPart {
  readonly first: boolean;
  readonly last: boolean;
  /** [start, end) of this stage's decoder layers. */
  readonly layerRange: [number, number];

  /** Stage `index` of `count` of the model `cfg`, its tensors taken from the rank's `src`. */
  constructor(
    cfg: ModelConfig,
    src: ParamRegistry,
    readonly index: number,
    readonly count: number,
    o: StageBuildOptions = {},
  ) {
    if (!Number.isInteger(index) || index < 0 || index >= count) throw new DsvError(`pipeline stage ${index} does not exist in a ${count}-stage model`);
    const layers = stageLayerRanges(cfg.num_hidden_layers, count, o.split)[index]!;
    super(cfg, src, { layers, embed: index === 0, head: index === count - 1, mtp: o.mtp ?? true });
    this.first = index === 0;
    this.last = index === count - 1;
    this.layerRange = layers;
  }

  /**
   * F: `input` is null on stage 0 (it embeds the micro-batch's ids), else the received
   * activation [B, S, D] (a leaf that requires grad). Records the graph for `backward`.
   */
  forward(input: Tensor | null, mb: StageMicroBatch, o: StageLossOptions): StageForward {
    const { B, S } = mb;
    const batch = tokenBatch(mb.tokens, B, S);
    let h: Tensor;
    if (this.first) {
      if (input !== null) throw new DsvError(`pipeline stage 0 embeds token ids; it was given an activation`);
      h = this.embed(batch.ids);
    } else {
      const D = this.cfg.hidden_size;
      if (input === null || input.ndim !== 3 || input.shape[0] !== B || input.shape[1] !== S || input.shape[2] !== D) {
        throw new DsvError(`pipeline stage ${this.index} expects an activation [${B}, ${S}, ${D}], got ${input ? `[${input.shape.join(', ')}]` : 'none'}`);
      }
      h = input;
    }
    const routing = new Map<number, Routing>();
    h = this.decoderLayers(h, { rope: this.rope, start: 0, path: 'naive' }, routing);
    const lossScale = o.lossScale ?? 1;
    if (!this.last) {
      const terms = balanceTerms(routing, B, o);
      let side: Tensor | null = null;
      for (const t of terms.values()) side = side ? add(side, t) : t;
      const root = side ? withSideLoss(h, lossScale === 1 ? side : scale(side, lossScale)) : h;
      return { root, input, output: h.detach(), balance: values(terms), report: null, loads: loadsOf(routing) };
    }
    // Last stage: final norm, then the objective of the part holding the head (the sequential one).
    const { terms } = headObjective(this, this.norm!.forward(h), batch, routing, o);
    const root = lossScale === 1 ? terms.total : scale(terms.total, lossScale);
    return { root, input, output: null, balance: values(terms.balancePerLayer), report: lossReport(terms), loads: loadsOf(routing) };
  }

  /**
   * B (split false) or b (split true) of a forward: `gradOut` is the gradient of the output
   * activation (null on the last stage, whose root is the loss). Returns the input gradient
   * (null on stage 0) and, for a split backward, the weight-gradient closures for W.
   */
  backward(f: StageForward, gradOut: Tensor | null, split: boolean): { inputGrad: Tensor | null; weightGrads: Array<() => void> } {
    if (this.last !== (gradOut === null)) {
      throw new DsvError(`pipeline stage ${this.index}: backward ${this.last ? 'of the last stage starts from the loss, no output gradient' : 'needs the gradient of the output activation'}`);
    }
    const run = (): void => (gradOut ? backward(f.root, gradOut) : backward(f.root));
    let weightGrads: Array<() => void> = [];
    if (split) weightGrads = deferWeightGrads(run).weightGrads;
    else run();
    let inputGrad: Tensor | null = null;
    if (f.input) {
      inputGrad = f.input.grad ?? Tensor.zeros(f.input.shape);
      f.input.grad = null;
    }
    return { inputGrad, weightGrads };
  }
}

function values(terms: Map<number, Tensor>): Map<number, number> {
  const out = new Map<number, number>();
  for (const [l, t] of terms) out.set(l, t.item());
  return out;
}

function loadsOf(routing: Map<number, Routing>): Map<number, Int32Array> {
  const out = new Map<number, Int32Array>();
  for (const [l, r] of routing) out.set(l, r.load);
  return out;
}
