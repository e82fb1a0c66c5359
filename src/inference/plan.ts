/**
 * Layer plans: every weight a decode step touches, resolved once at session start into the raw
 * arrays and layouts the kernels want (no Tensor, no Map lookups per token).
 *
 * MLA's absorbed form (paper section 2.1.2) needs W^UK and W^UV per head: they are the rows of
 * kv_b_proj [H * (dn + dv), r] (head h: rows h(dn+dv) .. +dn are W^UK[h] [dn, r], the next dv
 * rows W^UV[h] [dv, r]). For float32 weights the plan keeps a view of the parameter itself
 * (no copy). For bf16 / FP8 kv_b_proj the matrix is decoded ONCE here into float32, exactly as
 * the model's absorbed path decodes it per call (`weightRows`): this costs
 * 4 * H * (dn + dv) * r bytes per layer — 64 KiB per layer for configs/bench-small.json,
 * 64 MiB per layer (3.9 GiB for 61 + 1 layers) for DeepSeek-V3 (H 128, dn = dv = 128, r 512),
 * about 0.6 % of its FP8 weights — and saves decoding it for every token.
 *
 * A bf16 kv_b_proj is NOT decoded (absorbedKvBBf16, src/model/mla.ts): the plan keeps views of
 * its bf16 bits (in the checkpoint's mapping, no copy) and mla.ts runs the per-head GEMMs with
 * gemmBf16's rule (q^C and ctx rounded to bf16, float32 accumulation), as the model's absorbed
 * form then does: a decode token reads 2 bytes per weight instead of 4 (30 MB less per token at
 * the DeepSeek-V2-Lite shape, issue 12). DSV3_KVB_BF16=0 decodes it to float32 as before.
 *
 * An FP8 kv_b_proj whose heads' row blocks start on 128-row scale blocks (dn and dv multiples
 * of 128, as in DeepSeek-V2/V3) is NOT decoded either (fp8KvBInPlace): the plan keeps views of
 * each head's codes and block scales, and mla-fp8-heads.ts multiplies by them in place, one
 * byte per weight instead of four (Kernels.linearFp8T for W^UK, linearFp8 for W^UV), with the
 * dequantised weights float32(e4m3 * scale) of the model's path. DSV3_KVB_FP8=0 decodes it.
 */
import type { ModelConfig } from '../model/config.js';
import type { DecoderLayer } from '../model/decoder-layer.js';
import { MoE } from '../model/moe.js';
import type { SwiGluMlp } from '../model/mlp.js';
import type { RMSNorm } from '../model/rmsnorm.js';
import { ExpertSelector, type RouterConfig } from '../model/router.js';
import { absorbedKvBBf16 } from '../model/mla.js';
import { denseRows } from '../model/weights.js';
import { type Fp8HeadWeights, fp8KvBHeads } from './mla-fp8-heads.js';
import { type PreparedLinear, prepareLinear } from './linear.js';

export interface NormPlan {
  readonly w: Float32Array;
  readonly eps: number;
  readonly dim: number;
}

export interface MlpPlan {
  readonly gate: PreparedLinear;
  readonly up: PreparedLinear;
  readonly down: PreparedLinear;
  readonly inter: number;
}

export interface MoePlan {
  readonly rc: RouterConfig;
  /** Router weight e_i (Eq. 15), [E, D]. */
  readonly gateW: Float32Array;
  /** e_score_correction_bias [E] (selection only), or null. */
  readonly bias: Float32Array | null;
  /** Expert selection on preallocated scratch (shared with the model's router). */
  readonly selector: ExpertSelector;
  readonly experts: readonly MlpPlan[];
  readonly shared: MlpPlan | null;
}

export interface AttnPlan {
  readonly heads: number;
  readonly dn: number;
  readonly dr: number;
  readonly dv: number;
  readonly r: number;
  readonly scale: number;
  /** q_a_proj, q_a_layernorm, q_b_proj (q_lora_rank set) or q_proj. */
  readonly qA: PreparedLinear | null;
  readonly qANorm: NormPlan | null;
  readonly qB: PreparedLinear | null;
  readonly q: PreparedLinear | null;
  readonly kvA: PreparedLinear;
  readonly kvANorm: NormPlan;
  /** kv_b_proj as float32 [H * (dn + dv), r]: W^UK[h] and W^UV[h] are row blocks of it. */
  readonly kvB: Float32Array;
  /** Views of kvB at W^UK[h] (rows h(dn+dv) ..) and W^UV[h] (rows h(dn+dv)+dn ..), row stride r. */
  readonly ukHead: readonly Float32Array[];
  readonly uvHead: readonly Float32Array[];
  /** True when kvB is a decoded copy (bf16 / FP8 kv_b_proj), false when it is the parameter. */
  readonly kvBDecoded: boolean;
  /**
   * A bf16 kv_b_proj kept as its bits (kvB, ukHead and uvHead are then empty): the per-head
   * views of W^UK / W^UV in the bits, for kernels().gemmBatchBf16; null: the float32 views.
   */
  readonly ukHeadBits: readonly Uint16Array[] | null;
  readonly uvHeadBits: readonly Uint16Array[] | null;
  /** An FP8 kv_b_proj read in place (kvB, ukHead and uvHead are then empty), or null. */
  readonly kvBFp8: Fp8HeadWeights | null;
  readonly o: PreparedLinear;
  /** This layer's slot in the latent cache. */
  readonly slot: number;
}

export interface LayerPlan {
  readonly index: number;
  readonly inNorm: NormPlan;
  readonly attn: AttnPlan;
  readonly postNorm: NormPlan;
  /** Dense SwiGLU MLP, or null for a MoE layer. */
  readonly mlp: MlpPlan | null;
  readonly moe: MoePlan | null;
}

function f32Of(t: { contiguous(): { f32(): Float32Array } }): Float32Array {
  return t.contiguous().f32();
}

export function planNorm(n: RMSNorm): NormPlan {
  return { w: f32Of(n.weight), eps: n.eps, dim: n.dim };
}

export function planMlp(m: SwiGluMlp): MlpPlan {
  return { gate: prepareLinear(m.gate), up: prepareLinear(m.up), down: prepareLinear(m.down), inter: m.gate.outFeatures };
}

export function planLayer(layer: DecoderLayer): LayerPlan {
  const a = layer.selfAttn;
  const bits = a.kvB.kind === 'bf16' && absorbedKvBBf16(a.kvB) ? a.kvB.bits : null;
  const fp8 = a.kvB.kind === 'fp8' ? fp8KvBHeads(a.kvB, a.heads, a.dn, a.dv, a.r) : null;
  const decoded = !bits && !fp8 && a.kvB.kind !== 'f32';
  const kvB = bits || fp8 ? new Float32Array(0) : decoded ? denseRows(a.kvB) : prepareLinear(a.kvB).f32!;
  const block = (a.dn + a.dv) * a.r;
  const heads = (o: number) => (bits || fp8 ? [] : Array.from({ length: a.heads }, (_, h) => kvB.subarray(h * block + o)));
  const headBits = (o: number) => (bits ? Array.from({ length: a.heads }, (_, h) => bits.subarray(h * block + o)) : null);
  const attn: AttnPlan = {
    heads: a.heads,
    dn: a.dn,
    dr: a.dr,
    dv: a.dv,
    r: a.r,
    scale: a.scale,
    qA: a.qA ? prepareLinear(a.qA) : null,
    qANorm: a.qANorm ? planNorm(a.qANorm) : null,
    qB: a.qB ? prepareLinear(a.qB) : null,
    q: a.q ? prepareLinear(a.q) : null,
    kvA: prepareLinear(a.kvA),
    kvANorm: planNorm(a.kvANorm),
    kvB,
    ukHead: heads(0),
    uvHead: heads(a.dn * a.r),
    kvBDecoded: decoded,
    ukHeadBits: headBits(0),
    uvHeadBits: headBits(a.dn * a.r),
    kvBFp8: fp8,
    o: prepareLinear(a.o),
    slot: a.cacheSlot,
  };
  const mlp = layer.mlp;
  let moe: MoePlan | null = null;
  if (mlp instanceof MoE) {
    moe = {
      rc: mlp.router,
      gateW: f32Of(mlp.gateWeight),
      bias: mlp.bias ? f32Of(mlp.bias) : null,
      selector: new ExpertSelector(mlp.router),
      experts: mlp.experts.map(planMlp),
      shared: mlp.shared ? planMlp(mlp.shared) : null,
    };
  }
  return {
    index: layer.index,
    inNorm: planNorm(layer.inputLayernorm),
    attn,
    postNorm: planNorm(layer.postAttentionLayernorm),
    mlp: mlp instanceof MoE ? null : planMlp(mlp),
    moe,
  };
}

/** Largest FFN intermediate width over the plans (sizes the activation buffers). */
export function maxIntermediate(cfg: ModelConfig): number {
  return Math.max(cfg.intermediate_size, cfg.moe_intermediate_size, cfg.n_shared_experts * cfg.moe_intermediate_size);
}
