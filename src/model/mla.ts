/**
 * Multi-head Latent Attention (paper section 2.1.1, Eqs. 1-11).
 *
 *   c^KV_t = W^DKV h_t                          (1)  kv_a_proj_with_mqa, first r channels, then
 *                                                    kv_a_layernorm (eps 1e-6)
 *   [k^C_{t,i}] = W^UK c^KV_t                   (2)  kv_b_proj rows h*(dn+dv) .. +dn
 *   k^R_t = RoPE(W^KR h_t)                      (3)  kv_a_proj_with_mqa, last dr channels
 *   k_{t,i} = [k^C_{t,i} ; k^R_t]               (4)  one rope key shared by every head
 *   [v^C_{t,i}] = W^UV c^KV_t                   (5)  kv_b_proj rows h*(dn+dv)+dn .. +dv
 *   c^Q_t = W^DQ h_t                            (6)  q_a_proj, then q_a_layernorm (eps 1e-6)
 *   [q^C_{t,i}] = W^UQ c^Q_t                    (7)  q_b_proj, first dn channels per head
 *   [q^R_{t,i}] = RoPE(W^QR c^Q_t)              (8)  q_b_proj, last dr channels per head
 *   q_{t,i} = [q^C_{t,i} ; q^R_{t,i}]           (9)
 *   o_{t,i} = sum_j softmax_j(q.k / sqrt(dn+dr)) v^C_{j,i}   (10) (times YaRN mscale^2)
 *   u_t = W^O [o_{t,1} ; ... ; o_{t,n_h}]       (11) o_proj
 *
 * With q_lora_rank null (DeepSeek-V2-Lite style) the query is a plain q_proj(h).
 *
 * Two equivalent forms:
 *   - naive: expand every cached c^KV through kv_b_proj into per-head keys and values;
 *   - absorbed (section 2.1.2's inference trick): W^UK is folded into the query,
 *     q_lat = W^UK[h]^T q^C (length r), so scores are q_lat.c^KV + q^R.k^R against the latent
 *     cache itself (one KV "head"), and W^UV is applied after the weighted sum:
 *     o[h] = W^UV[h] (sum_j p_j c^KV_j).
 */
import { dropActivations } from '../engine/active-arena.js';
import { isGradEnabled, noGrad } from '../engine/autograd.js';
import { attention, bf16LinearFromBits, cat, fp8FpropBuffers, fp8LinearFromOperands, matmul, mlaAttention, pendingBf16Copy, pendingFp8Fprop, roundBf16, ropeTail, type Fp8Fprop, type MlaAttentionOptions, type RmsNormOptions } from '../engine/ops/index.js';
import { dataOf } from '../engine/ops/util.js';
import type { OverBuffer } from '../engine/arena.js';
import type { Tensor } from '../engine/tensor.js';
import type { ModelConfig } from './config.js';
import { softmaxScale } from './yarn.js';
import { kernels } from '../engine/backend.js';
import { nativeHasBf16Dot } from '../engine/native.js';
import type { LatentCache } from './latent-cache.js';
import type { ParamSource } from './params.js';
import { LATENT_NORM_EPS, RMSNorm } from './rmsnorm.js';
import type { RotaryEmbedding } from './rope.js';
import { applyLinear, feedsBf16Linear, type LinearWeight, weightRows } from './weights.js';
import { trainingPrecision, withPrecision, type Precision } from './precision-mode.js';

let kvBBf16 = process.env.DSV3_KVB_BF16 !== '0';

/**
 * Whether the absorbed form (decode) multiplies a bf16 kv_b_proj's W^UK / W^UV with operands
 * rounded to bf16 (q^C and the attention context; float32 accumulation): the inference engine
 * then reads the bf16 bits in place, 2 bytes per weight instead of a float32 copy's 4 (issue 12).
 * DSV3_KVB_BF16=0 in the environment keeps float32 operands and the engine's float32 copy.
 */
export function absorbedKvBBf16(w: LinearWeight): boolean {
  return kvBBf16 && w.kind === 'bf16';
}

/** Sets absorbedKvBBf16's switch (tests, A/B); returns the previous setting. Plans made before keep theirs. */
export function setAbsorbedKvBBf16(on: boolean): boolean {
  const was = kvBBf16;
  kvBBf16 = on;
  return was;
}

let recomputeOn = process.env.DSV3_RECOMPUTE !== '0';

/** Whether training forwards recompute MLA's up-projections in backward (default on; env
 * DSV3_RECOMPUTE=0 turns it off, for comparisons). */
export function mlaRecomputeEnabled(): boolean {
  return recomputeOn;
}

/** Runs fn with the MLA up-projection recomputation on or off; restores the setting after. */
export function withMlaRecompute<T>(on: boolean, fn: () => T): T {
  const prev = recomputeOn;
  recomputeOn = on;
  try {
    return fn();
  } finally {
    recomputeOn = prev;
  }
}

export type AttentionPath = 'naive' | 'absorbed';

/** Per-call inputs of an attention layer. */
export interface AttentionContext {
  rope: RotaryEmbedding;
  /** Position of the first token of x (the cache length when decoding). */
  start: number;
  path: AttentionPath;
  /** When given, this layer's latents are appended and attention runs over the whole cache. */
  cache?: LatentCache;
  /** Receives `kv_normed` [B, T, r] and `k_pe_rotated` [B, T, dr] of the new tokens. */
  captureLatent?: (cKV: Tensor, kPeRotated: Tensor) => void;
}

/**
 * Whether this forward's attention core runs on BF16 operands: under --precision bf16 and fp8
 * (§3.3 keeps attention's matmuls in BF16), where the CPU has bf16 dot products (VDPBF16PS) or
 * on the reference backend; without them the BF16 kernel is slower than float32
 * (native.ts nativeHasBf16Dot), and the float32 core runs.
 */
function bf16Attention(): boolean {
  return trainingPrecision() !== 'fp32' && (kernels().name !== 'native' || nativeHasBf16Dot());
}

/**
 * y = applyLinear(x, w) again in backward, and what must be kept for it: under bf16 with a
 * trainable float32 W, x's bf16 copy that the recorded bf16Linear keeps (bf16LinearFromBits runs
 * that forward's GEMM on the same operands: the same bits); under fp8, the FP8 operands (x's
 * 1x128-tile copy, W's block copy) that the recorded FP8 Linear keeps for Wgrad and Dgrad anyway
 * (fp8LinearFromOperands runs that Fprop's GEMM on them: the same bits); else x itself.
 */
function upAgain(x: Tensor, w: LinearWeight, p: Precision): { keep: readonly OverBuffer[]; y: () => Tensor } {
  const trainable = w.kind === 'f32' && w.weight.requiresGrad;
  const xb = p === 'bf16' && trainable ? pendingBf16Copy(x) : null;
  if (xb && w.kind === 'f32') return fromBits(xb, x.shape, w.weight);
  const f8 = p === 'fp8' && trainable && w.kind === 'f32' ? pendingFp8Fprop(x, w.weight) : null;
  return f8 ? fromFp8(f8, x.shape) : fromTensor(x, w);
}

// separate functions, so that no closure's context holds what another reads
function fromBits(xb: Uint16Array, shape: readonly number[], w: Tensor): { keep: readonly OverBuffer[]; y: () => Tensor } {
  return { keep: [xb], y: () => bf16LinearFromBits(xb, shape, w) };
}

function fromFp8(f: Fp8Fprop, shape: readonly number[]): { keep: readonly OverBuffer[]; y: () => Tensor } {
  return { keep: fp8FpropBuffers(f), y: () => fp8LinearFromOperands(f, shape) };
}

function fromTensor(x: Tensor, w: LinearWeight): { keep: readonly OverBuffer[]; y: () => Tensor } {
  return { keep: [x], y: () => applyLinear(x, w) };
}

/**
 * kv_a_layernorm's input (the first r channels of W^DKV h, a strided slice of kv_a_proj's output)
 * recomputed in its backward instead of kept as a float32 copy (§3.2.3, "Recomputation of
 * RMSNorm"): under bf16 with a trainable W^DKV, from the bf16 copy of h that W^DKV's Linear keeps
 * for Wgrad anyway; under fp8, from the FP8 operands (h's tile copy, W^DKV's block copy) that its
 * FP8 Linear keeps for Wgrad and Dgrad anyway (the same GEMM on the same operands as its forward:
 * the same bits). Else {}.
 * Off with the up-projection recomputation (DSV3_RECOMPUTE=0, withMlaRecompute).
 */
function latentNormInputAgain(x: Tensor, w: LinearWeight, r: number): Pick<RmsNormOptions, 'recomputeInput'> {
  if (!isGradEnabled() || !mlaRecomputeEnabled() || w.kind !== 'f32' || !w.weight.requiresGrad) return {};
  const p = trainingPrecision();
  const shape = x.shape; // the closures keep neither x nor its data
  const wt = w.weight;
  const xb = p === 'bf16' ? pendingBf16Copy(x) : null;
  if (xb) return { recomputeInput: { from: [xb], x: () => sliceAgain(bf16LinearFromBits(xb, shape, wt), r) } };
  const f8 = p === 'fp8' ? pendingFp8Fprop(x, wt) : null;
  if (f8) return { recomputeInput: { from: fp8FpropBuffers(f8), x: () => sliceAgain(fp8LinearFromOperands(f8, shape), r) } };
  return {};
}

/** The first r channels of full (x W^T recomputed), contiguous; full goes back to the arena. */
function sliceAgain(full: Tensor, r: number): Float32Array {
  const c = dataOf(full.slice(full.ndim - 1, 0, r));
  dropActivations(full);
  return c;
}

export class MultiHeadLatentAttention {
  readonly heads: number;
  readonly dn: number;
  readonly dr: number;
  readonly dv: number;
  readonly r: number;
  readonly scale: number;
  /** q_lora_rank set: W^DQ, its norm and W^U[QR]; else a plain q_proj. */
  readonly qA: LinearWeight | null;
  readonly qANorm: RMSNorm | null;
  readonly qB: LinearWeight | null;
  readonly q: LinearWeight | null;
  readonly kvA: LinearWeight;
  readonly kvANorm: RMSNorm;
  readonly kvB: LinearWeight;
  readonly o: LinearWeight;

  constructor(
    cfg: ModelConfig,
    src: ParamSource,
    prefix: string,
    /** Index of this layer's buffer in the latent cache. */
    readonly cacheSlot: number,
  ) {
    const D = cfg.hidden_size;
    this.heads = cfg.num_attention_heads;
    this.dn = cfg.qk_nope_head_dim;
    this.dr = cfg.qk_rope_head_dim;
    this.dv = cfg.v_head_dim;
    this.r = cfg.kv_lora_rank;
    this.scale = softmaxScale(cfg);
    const H = this.heads;
    const qOut = H * (this.dn + this.dr);
    if (cfg.q_lora_rank === null) {
      this.qA = this.qB = null;
      this.qANorm = null;
      this.q = src.linear(`${prefix}.q_proj.weight`, qOut, D);
    } else {
      this.qA = src.linear(`${prefix}.q_a_proj.weight`, cfg.q_lora_rank, D);
      this.qANorm = new RMSNorm(src, `${prefix}.q_a_layernorm`, cfg.q_lora_rank, LATENT_NORM_EPS);
      this.qB = src.linear(`${prefix}.q_b_proj.weight`, qOut, cfg.q_lora_rank);
      this.q = null;
    }
    this.kvA = src.linear(`${prefix}.kv_a_proj_with_mqa.weight`, this.r + this.dr, D);
    this.kvANorm = new RMSNorm(src, `${prefix}.kv_a_layernorm`, this.r, LATENT_NORM_EPS);
    this.kvB = src.linear(`${prefix}.kv_b_proj.weight`, H * (this.dn + this.dv), this.r);
    this.o = src.linear(`${prefix}.o_proj.weight`, D, H * this.dv);
  }

  /**
   * Eqs. 6-8: per-head query [B, T, H, dn + dr] (rope part not yet rotated), and the input of
   * its up-projection (c^Q normalised; x itself without q_lora_rank).
   */
  private query(x: Tensor, drop: typeof dropActivations): { q: Tensor; cQ: Tensor } {
    let cQ = x;
    if (!this.q) {
      const c = applyLinear(x, this.qA!);
      cQ = this.qANorm!.forward(c, { bf16Out: feedsBf16Linear(this.qB!) });
      drop(c);
    }
    return { q: this.upQuery(cQ), cQ };
  }

  /** Eqs. 7-8: W^UQ / W^QR (or q_proj) of cQ [B, T, *] -> [B, T, H, dn + dr]. */
  private upQuery(cQ: Tensor): Tensor {
    const [B, T] = cQ.shape as [number, number];
    return applyLinear(cQ, this.q ?? this.qB!).reshape([B, T, this.heads, this.dn + this.dr]);
  }

  /**
   * What the attention's backward needs of q (rotated) and kv_b_proj's output, recomputed from
   * the latents instead of stored (DeepSeek-V3 §3.2.3, "Recomputation of RMSNorm and MLA
   * Up-Projection"): the same ops in the same precision, so the values are the same bits.
   * Called once kv_b_proj's forward ran. Under bf16 the up-projections' inputs are kept only as
   * the bf16 copies their Linears keep for Wgrad anyway (their Fprop's A operand: `upAgain`), not
   * as float32 latents (issue 13).
   */
  private recompute(cQ: Tensor, cKV: Tensor, cos: Tensor, sin: Tensor): MlaAttentionOptions['recompute'] {
    const p = trainingPrecision();
    const [B, S] = cKV.shape as [number, number];
    const T = cQ.shape[1]!;
    const { heads: H, dn, dv, dr } = this;
    const qUp = upAgain(cQ, this.q ?? this.qB!, p);
    const kvUp = upAgain(cKV, this.kvB, p);
    return {
      from: [...qUp.keep, ...kvUp.keep],
      q: () => withPrecision(p, () => noGrad(() => {
        const q = qUp.y();
        const qr = ropeTail(q.reshape([B, T, H, dn + dr]), cos, sin, dr);
        dropActivations(q);
        return qr;
      })),
      kvb: () => withPrecision(p, () => noGrad(() => kvUp.y().reshape([B, S, H, dn + dv]))),
    };
  }

  /** Whether forward's input is read first by BF16 Linears that save its bf16 bits (W^DQ or W_Q, and W^DKV). */
  inputFeedsBf16(): boolean {
    return feedsBf16Linear(this.kvA) && feedsBf16Linear(this.q ?? this.qA!);
  }

  /** x [B, T, D] -> attention output u [B, T, D] (after o_proj). */
  forward(x: Tensor, ctx: AttentionContext): Tensor {
    const [B, T] = x.shape as [number, number];
    const { dn, dr, r } = this;
    // training (no cache, no capture): intermediates are dropped once read (arena.ts
    // dropActivations); each op's backward holds what it saved
    const drop = ctx.cache || ctx.captureLatent ? (): void => {} : dropActivations;
    const { q, cQ } = this.query(x, drop);
    // Eqs. 1 and 3: [c^KV ; k^R] from one projection, then the latent norm and the rope.
    const kv = applyLinear(x, this.kvA);
    // c^KV feeds kv_b_proj directly on the training path (naive, no cache: cAll = cKV)
    const cKV = this.kvANorm.forward(kv.slice(2, 0, r), {
      bf16Out: !ctx.cache && ctx.path === 'naive' && feedsBf16Linear(this.kvB),
      ...latentNormInputAgain(x, this.kvA, r),
    });
    const kPe = ctx.rope.apply(kv.slice(2, r, r + dr), ctx.start).reshape([B, T, 1, dr]);
    drop(kv);
    ctx.captureLatent?.(cKV, kPe.reshape([B, T, dr]));

    let cAll: Tensor; // [B, S, r]
    let kPeAll: Tensor; // [B, S, 1, dr]
    let latent: Tensor | null = null; // [B, S, 1, r + dr]
    if (ctx.cache) {
      ctx.cache.write(this.cacheSlot, cKV, kPe, ctx.start);
      latent = ctx.cache.keys(this.cacheSlot, ctx.start + T);
      cAll = ctx.cache.latents(this.cacheSlot, ctx.start + T);
      kPeAll = ctx.cache.ropeKeys(this.cacheSlot, ctx.start + T);
    } else {
      if (ctx.start !== 0) throw new Error('MLA: a start position > 0 needs a latent cache');
      cAll = cKV;
      kPeAll = kPe;
    }
    const S = cAll.shape[1]!;
    let out: Tensor;
    if (ctx.path === 'naive') {
      const { cos, sin } = ctx.rope.tables(ctx.start, T);
      const qr = ropeTail(q, cos, sin, dr);
      drop(q);
      // training: q and kv_b_proj's output are recomputed in backward, not kept (§3.2.3)
      const rc = !ctx.cache && isGradEnabled() && mlaRecomputeEnabled() ? () => this.recompute(cQ, cAll, cos, sin) : undefined;
      out = this.naive(qr, cAll, kPeAll, S - T, drop, rc);
      drop(qr, cKV, kPe, cQ !== x ? cQ : null);
    } else {
      const qPe = ctx.rope.apply(q.slice(3, dn, dn + dr), ctx.start);
      out = this.absorbed(q.slice(3, 0, dn), qPe, latent ?? cat([cAll, kPeAll.reshape([B, S, dr])], 2).reshape([B, S, 1, r + dr]), S - T);
    }
    const u = applyLinear(out.reshape([B, T, this.heads * this.dv]), this.o);
    drop(out);
    return u;
  }

  /**
   * Eqs. 2, 4, 5, 9, 10 literally: per-head keys [k^C ; k^R] and values, H KV heads. q is
   * [q^C ; q^R] with q^R rotated; `mlaAttention` assembles the keys from kv_b_proj's k^C and
   * the shared k^R and reads v^C in place.
   */
  private naive(q: Tensor, cAll: Tensor, kPeAll: Tensor, causalOffset: number, drop: typeof dropActivations,
    recomputeAfter?: () => MlaAttentionOptions['recompute']): Tensor {
    const [B, S] = cAll.shape as [number, number];
    const { heads: H, dn, dv } = this;
    const kvb = applyLinear(cAll, this.kvB).reshape([B, S, H, dn + dv]);
    const recompute = recomputeAfter?.(); // after kv_b_proj: its bf16 copy of c^KV exists
    // BF16 attention core under --precision bf16 and fp8 (§3.3: attention's matmuls stay BF16)
    const o = mlaAttention(q, kvb, kPeAll, { scale: this.scale, causalOffset, bf16: bf16Attention(), ...(recompute ? { recompute } : {}) });
    drop(kvb);
    return o;
  }

  /**
   * Absorbed form: q_lat[h] = W^UK[h]^T q^C[h]; scores against latent rows [c^KV ; k^R] (one
   * shared KV head, V = the c^KV part of the same rows); o[h] = W^UV[h] (sum_j p_j c^KV_j).
   */
  private absorbed(qNope: Tensor, qPe: Tensor, latent: Tensor, causalOffset: number): Tensor {
    const { heads: H, dn, dv, r } = this;
    const wkv = weightRows(this.kvB).reshape([H, dn + dv, r]);
    const wUK = wkv.slice(1, 0, dn); // [H, dn, r]
    const wUV = wkv.slice(1, dn, dn + dv); // [H, dv, r]
    // a bf16 kv_b_proj multiplies bf16-rounded operands (gemmBf16's rule, as its naive form
    // linearBf16(c^KV) does), so the engine can read its bf16 bits in place (absorbedKvBBf16)
    const bf = absorbedKvBBf16(this.kvB);
    const qLat = matmul((bf ? roundBf16(qNope) : qNope).transpose(1, 2), wUK).transpose(1, 2); // [B, T, H, r]
    const ctx = attention(cat([qLat, qPe], 3), latent, latent.slice(3, 0, r), { scale: this.scale, causalOffset, bf16: bf16Attention() });
    return matmul((bf ? roundBf16(ctx) : ctx).transpose(1, 2), wUV.transpose(1, 2)).transpose(1, 2); // [B, T, H, dv]
  }
}
