/**
 * One Transformer block of DeepSeek-V3 (paper Figure 2):
 *   h = x + MLA(RMSNorm(x));  out = h + FFN(RMSNorm(h))
 * where FFN is DeepSeekMoE when `isMoeLayer(cfg, i)` (i >= first_k_dense_replace and
 * i % moe_layer_freq == 0) and a dense SwiGLU MLP otherwise.
 */
import { dropActivations } from '../engine/active-arena.js';
import { isGradEnabled } from '../engine/autograd.js';
import { add, rmsNormAgain, type LinearRecompute } from '../engine/ops/index.js';
import { trainingPrecision } from './precision-mode.js';
import { Tensor } from '../engine/tensor.js';
import { isMoeLayer, type ModelConfig } from './config.js';
import { type AttentionContext, MultiHeadLatentAttention, mlaRecomputeEnabled } from './mla.js';
import { SwiGluMlp } from './mlp.js';
import { MoE } from './moe.js';
import type { ParamSource } from './params.js';
import { RMSNorm } from './rmsnorm.js';
import type { Routing } from './router.js';

/** Receives intermediate tensors under their fixture names (e.g. `attn_out.layers.0`). */
export type Capture = (name: string, t: Tensor) => void;

export class DecoderLayer {
  readonly inputLayernorm: RMSNorm;
  readonly selfAttn: MultiHeadLatentAttention;
  readonly postAttentionLayernorm: RMSNorm;
  readonly mlp: SwiGluMlp | MoE;

  constructor(
    cfg: ModelConfig,
    src: ParamSource,
    /** Layer index in the checkpoint (num_hidden_layers + k - 1 for MTP module k). */
    readonly index: number,
    cacheSlot: number,
  ) {
    const p = `model.layers.${index}`;
    const D = cfg.hidden_size;
    this.selfAttn = new MultiHeadLatentAttention(cfg, src, `${p}.self_attn`, cacheSlot);
    this.mlp = isMoeLayer(cfg, index) ? new MoE(cfg, src, `${p}.mlp`) : new SwiGluMlp(src, `${p}.mlp`, D, cfg.intermediate_size);
    this.inputLayernorm = new RMSNorm(src, `${p}.input_layernorm`, D, cfg.rms_norm_eps);
    this.postAttentionLayernorm = new RMSNorm(src, `${p}.post_attention_layernorm`, D, cfg.rms_norm_eps);
  }

  get isMoe(): boolean {
    return this.mlp instanceof MoE;
  }

  /** x [B, T, D] -> block output [B, T, D], and the routing when the FFN is MoE. */
  forward(x: Tensor, ctx: AttentionContext, capture?: Capture): { out: Tensor; routing: Routing | null } {
    const i = this.index;
    const [B, T] = x.shape as [number, number];
    const attnCtx: AttentionContext = capture
      ? {
          ...ctx,
          captureLatent: (c, k) => {
            capture(`latent.layers.${i}.kv_normed`, c);
            capture(`latent.layers.${i}.k_pe_rotated`, k);
          },
        }
      : ctx;
    // intermediates are dropped once their readers ran (arena.ts dropActivations): each op's
    // backward holds what it saved, the rest is reused within the step; not while capturing
    const drop = capture ? (): void => {} : dropActivations;
    // the norms write the bf16 bits of their output too when BF16 Linears read it next
    const normed = this.inputLayernorm.forward(x, { bf16Out: this.selfAttn.inputFeedsBf16() });
    const attnOut = this.selfAttn.forward(normed, attnCtx);
    drop(normed);
    capture?.(`attn_out.layers.${i}`, attnOut);
    const h = add(x, attnOut);
    drop(attnOut);
    const u = this.postAttentionLayernorm.forward(h, { bf16Out: this.mlp instanceof SwiGluMlp && this.mlp.inputFeedsBf16() });
    let ffnOut: Tensor;
    let routing: Routing | null = null;
    if (this.mlp instanceof MoE) {
      const r = this.mlp.forward(u, capture ? null : this.routerInputAgain(h));
      ffnOut = r.out;
      routing = r.routing;
      if (capture) {
        const K = routing.topK;
        capture(`router.layers.${i}.topk_idx`, Tensor.fromI32(routing.topkIdx, [B, T, K]));
        capture(`router.layers.${i}.topk_weight`, routing.weights.reshape([B, T, K]));
        capture(`router.layers.${i}.scores`, routing.scores.reshape([B, T, routing.experts]));
      }
    } else {
      ffnOut = this.mlp.forward(u);
    }
    capture?.(`ffn_out.layers.${i}`, ffnOut);
    drop(u);
    const out = add(h, ffnOut);
    drop(h, ffnOut);
    return { out, routing };
  }

  /**
   * Under fp8 and bf16 training, the router gate's Wgrad recomputes its input (the
   * post-attention norm's output u) from h, which that norm keeps for its own backward anyway
   * (§3.2.3, "Recomputation of RMSNorm"; the same kernel on the same operands: the same bits).
   * The FP8 experts keep u only as its FP8 copy, so the router was the one holder of float32 u
   * through the step (issue 13: -8 MB of fp8's peak at bench-small 8x256); under bf16 the fused
   * experts recompute u the same way (moe.ts passes this on to groupedExperts' inputAgain), so
   * neither keeps it (-6 MB of bf16's peak). Not under fp32 (its Linears keep float32 u anyway);
   * follows DSV3_RECOMPUTE (withMlaRecompute). Else null.
   */
  private routerInputAgain(h: Tensor): LinearRecompute | null {
    const p = trainingPrecision();
    if ((p !== 'fp8' && p !== 'bf16') || !isGradEnabled() || !mlaRecomputeEnabled()) return null;
    const n = this.postAttentionLayernorm;
    return rmsNormAgain(h, n.weight, n.eps);
  }
}
