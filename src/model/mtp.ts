/**
 * Multi-token prediction module k (paper section 2.2, Eqs. 21-23), as the released weights
 * define it (embedding first in the concatenation; the paper's Eq. 21 prints h first):
 *
 *   h'^k_i = M_k [RMSNorm(Emb(t_{i+k})) ; RMSNorm(h^{k-1}_i)]      (21)  enorm, hnorm, eh_proj
 *   h^k_{1:T-k} = TRM_k(h'^k_{1:T-k})                              (22)  one decoder layer
 *   P^k_{i+k+1} = OutHead(h^k_i)                                   (23)  shared_head.norm + head
 *
 * Emb and OutHead are shared with the main model (the checkpoint's `embed_tokens` and
 * `shared_head.head` copies under `model.layers.<L+k-1>` are the same parameters). h^0 is the
 * main model's hidden state after `model.norm`. RoPE positions restart at 0.
 */
import { dropActivations } from '../engine/active-arena.js';
import { cat, embedding } from '../engine/ops/index.js';
import type { Tensor } from '../engine/tensor.js';
import type { ModelConfig } from './config.js';
import { type Capture, DecoderLayer } from './decoder-layer.js';
import type { AttentionContext } from './mla.js';
import type { ParamSource } from './params.js';
import { RMSNorm } from './rmsnorm.js';
import type { Routing } from './router.js';
import { applyLinear, type LinearWeight } from './weights.js';

export interface MtpOutput {
  /** Depth k (1-based). */
  depth: number;
  /** [B, T-k, V]: logits[:, i] predicts token i + k + 1 (null when run with head: false). */
  logits: Tensor | null;
  /** [B, T-k, D]: shared_head.norm(h^k), the input of the output head. */
  headInput: Tensor;
  /** [B, T-k, D]: h^k, the decoder-layer output before shared_head.norm. */
  hidden: Tensor;
  routing: Routing | null;
}

export class MtpModule {
  readonly enorm: RMSNorm;
  readonly hnorm: RMSNorm;
  /** M_k, [D, 2D]. */
  readonly ehProj: LinearWeight;
  readonly layer: DecoderLayer;
  readonly sharedHeadNorm: RMSNorm;
  /** Checkpoint layer index num_hidden_layers + depth - 1. */
  readonly index: number;

  constructor(cfg: ModelConfig, src: ParamSource, readonly depth: number) {
    const D = cfg.hidden_size;
    this.index = cfg.num_hidden_layers + depth - 1;
    const p = `model.layers.${this.index}`;
    this.enorm = new RMSNorm(src, `${p}.enorm`, D, cfg.rms_norm_eps);
    this.hnorm = new RMSNorm(src, `${p}.hnorm`, D, cfg.rms_norm_eps);
    this.ehProj = src.linear(`${p}.eh_proj.weight`, D, 2 * D);
    this.layer = new DecoderLayer(cfg, src, this.index, this.index);
    this.sharedHeadNorm = new RMSNorm(src, `${p}.shared_head.norm`, D, cfg.rms_norm_eps);
  }

  /**
   * hPrev [B, T', D] (h^{k-1}_i) and nextIds [B, T'] (t_{i+k}) -> logits and h^k.
   * `embed` and `head` are the main model's embedding table and output head; with a null head
   * the logits are left to the caller (the training loss fuses head and cross-entropy).
   */
  forward(hPrev: Tensor, nextIds: Tensor, embed: Tensor, head: LinearWeight | null, ctx: AttentionContext, capture?: Capture): MtpOutput {
    const drop = capture ? (): void => {} : dropActivations; // intermediates, once read (arena.ts)
    const emb = embedding(embed, nextIds);
    const e = this.enorm.forward(emb);
    const h = this.hnorm.forward(hPrev);
    const eh = cat([e, h], -1);
    const x = applyLinear(eh, this.ehProj);
    drop(emb, e, h, eh);
    const { out, routing } = this.layer.forward(x, ctx, capture);
    drop(x);
    const headInput = this.sharedHeadNorm.forward(out);
    const logits = head ? applyLinear(headInput, head, { highPrecision: true }) : null; // the shared head: never FP8
    return { depth: this.depth, logits, headInput, hidden: out, routing };
  }
}
