/**
 * A contiguous part of DeepSeek-V3 (paper §2, Figures 2 and 3) and the pieces of its forward:
 *   h_0 = Emb(t)                                   (the first part: `embed`)
 *   h_l = Block_l(h_{l−1}),  l in [start, end)     (`decoderLayers`)
 *   RMSNorm(h_L) → lm_head;  MTP modules (§2.2)    (the last part: `finalNorm`, `lmHead`, `mtpForward`)
 * The whole model is the part that holds everything (`DeepseekV3`); a pipeline stage holds a
 * range of layers (parallel/stages.ts). Both run these same pieces, so there is one forward.
 */
import { dropActivations } from '../engine/active-arena.js';
import { embedding } from '../engine/ops/index.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { ModelConfig } from './config.js';
import { type Capture, DecoderLayer } from './decoder-layer.js';
import type { AttentionContext, AttentionPath } from './mla.js';
import { MtpModule, type MtpOutput } from './mtp.js';
import type { ParamRegistry } from './param-registry.js';
import { RMSNorm } from './rmsnorm.js';
import { RotaryEmbedding } from './rope.js';
import type { Routing } from './router.js';
import { bf16Linear, f32Linear, type LinearWeight } from './weights.js';

/** Which pieces a part holds. */
export interface PartLayout {
  /** [start, end) of its decoder layers. */
  layers: [number, number];
  /** The embedding (the first part). */
  embed: boolean;
  /** The final norm and the output head (the last part). */
  head: boolean;
  /** The MTP modules (only with the head). */
  mtp: boolean;
}

/** Token ids as an int32 tensor [B, S] (from a Tensor, or number[][]). */
export function idsTensor(ids: Tensor | readonly (readonly number[])[]): Tensor {
  if (ids instanceof Tensor) {
    if (ids.dtype !== 'i32' || ids.ndim !== 2) throw new DsvError(`token ids must be an int32 tensor [B, S], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    return ids;
  }
  const B = ids.length;
  const S = B ? ids[0]!.length : 0;
  if (!ids.every((r) => r.length === S)) throw new DsvError('token ids: every row must have the same length');
  return Tensor.fromI32(Int32Array.from(ids.flat()), [B, S]);
}

export class ModelPart {
  readonly embedTokens: Tensor | null = null;
  readonly layers: DecoderLayer[] = [];
  readonly norm: RMSNorm | null = null;
  readonly lmHead: LinearWeight | null = null;
  readonly mtp: MtpModule[] = [];
  /** The embedding the MTP modules share with the main model (§2.2; the same tensor as
   * `embedTokens` where the part holds both), null without MTP. */
  readonly mtpEmbed: Tensor | null = null;
  readonly rope: RotaryEmbedding;

  constructor(
    readonly cfg: ModelConfig,
    readonly registry: ParamRegistry,
    layout: PartLayout,
  ) {
    const D = cfg.hidden_size;
    const embed = (): Tensor => registry.tensor('model.embed_tokens.weight', [cfg.vocab_size, D], 'normal');
    if (layout.embed) this.embedTokens = embed();
    for (let i = layout.layers[0]; i < layout.layers[1]; i++) this.layers.push(new DecoderLayer(cfg, registry, i, i));
    if (layout.head) {
      this.norm = new RMSNorm(registry, 'model.norm', D, cfg.rms_norm_eps);
      this.lmHead = cfg.tie_word_embeddings ? tiedHead(embed()) : registry.linear('lm_head.weight', cfg.vocab_size, D);
      if (layout.mtp) for (let k = 1; k <= cfg.num_nextn_predict_layers; k++) this.mtp.push(new MtpModule(cfg, registry, k));
      if (this.mtp.length > 0) this.mtpEmbed = embed();
    }
    this.rope = new RotaryEmbedding(cfg);
  }

  /** h_0 = Emb(t) for ids [B, S]. */
  embed(ids: Tensor): Tensor {
    if (!this.embedTokens) throw new DsvError('this part of the model has no embedding (it is not the first pipeline stage)');
    return embedding(this.embedTokens, ids);
  }

  /** This part's decoder layers on h [B, T, D]; the routing of each MoE layer goes into `routing`. */
  decoderLayers(h: Tensor, ctx: AttentionContext, routing: Map<number, Routing>, capture?: Capture): Tensor {
    const input = h;
    for (const layer of this.layers) {
      const r = layer.forward(h, ctx, capture);
      // a layer's output is this loop's own: dropped once the next layer read it (arena.ts)
      if (h !== input && !capture && !ctx.cache) dropActivations(h);
      h = r.out;
      if (r.routing) routing.set(layer.index, r.routing);
      capture?.(`hidden.layers.${layer.index}`, h);
    }
    return h;
  }

  /**
   * The MTP modules (§2.2, eqs. 21–23) on the final-norm hidden state [B, S, D] and its ids
   * [B, S]: module k sees positions 0 .. S-k-1 (RoPE positions from 0) and the tokens k ahead,
   * chained through h^{k−1}. Captures `mtp.logits`, `mtp.hidden` (depth 1; `mtp.depth.k.*` for
   * deeper modules) and the MTP layers' router tensors. With `head: false` the logits are not
   * computed (null): the caller applies the head to each output's `headInput` (the fused loss).
   */
  mtpForward(hidden: Tensor, ids: Tensor, opts: { path?: AttentionPath; capture?: Capture; head?: boolean } = {}): MtpOutput[] {
    const idsT = idsTensor(ids);
    const S = idsT.shape[1]!;
    if (this.mtp.length === 0) throw new DsvError('this model has no MTP module (num_nextn_predict_layers is 0, or it was loaded with mtp: false)');
    const ctx: AttentionContext = { rope: this.rope, start: 0, path: opts.path ?? 'naive' };
    const cap = opts.capture;
    const routerOnly: Capture | undefined = cap ? (name, t) => name.startsWith('router.') && cap(name, t) : undefined;
    const outs: MtpOutput[] = [];
    let hPrev = hidden;
    for (const m of this.mtp) {
      const k = m.depth;
      if (S - k < 1) break;
      const next = idsT.slice(1, k, S).contiguous();
      const o = m.forward(hPrev.slice(1, 0, S - k), next, this.mtpEmbed!, opts.head === false ? null : this.lmHead, ctx, routerOnly);
      const tag = k === 1 ? 'mtp' : `mtp.depth.${k}`;
      if (o.logits) cap?.(`${tag}.logits`, o.logits);
      cap?.(`${tag}.hidden`, o.hidden);
      outs.push(o);
      hPrev = o.hidden;
    }
    return outs;
  }

  /** Trainable parameters (float32 leaves), in module order. */
  parameters(): Tensor[] {
    return [...this.registry.params.values()];
  }

  /** Balance bias of each MoE layer of this part (main layers and MTP layers), by layer index. */
  balanceBiases(): Map<number, Tensor> {
    const out = new Map<number, Tensor>();
    for (const l of [...this.layers, ...this.mtp.map((m) => m.layer)]) {
      const mlp = l.mlp;
      if ('bias' in mlp && mlp.bias) out.set(l.index, mlp.bias);
    }
    return out;
  }
}

/** lm_head tied to the embedding: the same tensor (a bf16 one when a mapped load kept it bf16). */
function tiedHead(e: Tensor): LinearWeight {
  return e.dtype === 'bf16' ? bf16Linear('lm_head.weight', e.data as Uint16Array, e.shape[0]!, e.shape[1]!) : f32Linear('lm_head.weight', e);
}
