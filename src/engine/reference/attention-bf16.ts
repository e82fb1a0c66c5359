/**
 * Reference BF16 attention (the oracle for the native kernel isa/attention_bf16.c; Kernels
 * .attentionBf16 / .attentionBackwardBf16): causal attention whose matrix products take
 * bfloat16 operands — q, k, v, dout, the probabilities P and the score gradients dS rounded to
 * bf16 by round-to-nearest-even (dtype.ts f32ToBf16) — with the products summed in float64
 * here (float32 in the kernel: the two differ by summation order only). Softmax statistics stay
 * unrounded. DeepSeek-V3 §3.3 keeps attention's matmuls in BF16 under the FP8 recipe.
 *
 * Forward, row i (visible keys j <= last):
 *   s_j = scale * Σ_d bf16(q_d) bf16(k_jd),  mq = ceil(max_j s_j * log2 e),
 *   P_j = exp(s_j - mq ln 2),  l = Σ_j P_j,  out = Σ_j bf16(P_j) bf16(v_j) / l,  lse = mq ln 2 + log l.
 * mq is an integer so that the flash kernel's running max, kept on the same grid, rescales
 * earlier tiles by exact powers of two: bf16(P) does not depend on the tiling.
 * Backward (P recomputed from lse):
 *   P_j = exp(s_j - lse),  dP_j = Σ_e bf16(dout_e) bf16(v_je),  D = Σ_e bf16(dout_e) out_e,
 *   dS_j = bf16(P_j (dP_j - D) scale),  dv_j += bf16(P_j) bf16(dout),  dq += dS_j bf16(k_j),
 *   dk_j += dS_j bf16(q).
 */
import type { AttentionParams } from '../kernels.js';
import { bf16ToF32, f32ToBf16 } from '../dtype.js';

const LN2F = Math.fround(Math.LN2);

function at(s: readonly [number, number, number], b: number, t: number, h: number): number {
  return b * s[0] + t * s[1] + h * s[2];
}

function offsetOf(p: AttentionParams, b: number): number {
  return p.causalOffsets ? p.causalOffsets[b]! : p.causalOffset;
}

/** x rounded to the bf16 grid (as a number). */
export function bf16(x: number): number {
  return bf16ToF32(f32ToBf16(x));
}

/** A copy of x with every element on the bf16 grid. */
function rounded(x: Float32Array): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = bf16(x[i]!);
  return y;
}

export function attentionBf16(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array): void {
  const { batch, heads, kvHeads, tq, tk, dqk, dv, scale } = p;
  const qb = rounded(q);
  const kb16 = rounded(k);
  const vb = rounded(v);
  const scores = new Float64Array(tk);
  const acc = new Float64Array(dv);
  for (let b = 0; b < batch; b++) {
    const causalOffset = offsetOf(p, b);
    const kb = p.kvBatch ? p.kvBatch[b]! : b;
    for (let h = 0; h < heads; h++) {
      const hk = kvHeads === 1 ? 0 : h;
      for (let i = 0; i < tq; i++) {
        const qo = at(p.qStrides, b, i, h);
        const oo = at(p.oStrides, b, i, h);
        const last = Math.min(tk - 1, i + causalOffset);
        if (last < 0) {
          for (let d = 0; d < dv; d++) out[oo + d] = 0;
          lse[(b * heads + h) * tq + i] = -Infinity;
          continue;
        }
        let m = -Infinity;
        for (let j = 0; j <= last; j++) {
          const ko = at(p.kStrides, kb, j, hk);
          let s = 0;
          for (let d = 0; d < dqk; d++) s += qb[qo + d]! * kb16[ko + d]!;
          s *= scale;
          scores[j] = s;
          if (s > m) m = s;
        }
        const mq = Math.ceil(m * Math.LOG2E);
        const muse = Math.fround(mq * LN2F);
        let sum = 0;
        acc.fill(0);
        for (let j = 0; j <= last; j++) {
          const e = Math.exp(scores[j]! - muse);
          sum += e;
          const pb = bf16(e);
          const vo = at(p.vStrides, kb, j, hk);
          for (let d = 0; d < dv; d++) acc[d] = acc[d]! + pb * vb[vo + d]!;
        }
        for (let d = 0; d < dv; d++) out[oo + d] = acc[d]! / sum;
        lse[(b * heads + h) * tq + i] = muse + Math.log(sum);
      }
    }
  }
}

/** dq, dk, dv are overwritten; with kvHeads 1 the heads' contributions to dk, dv are summed. */
export function attentionBackwardBf16(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array,
  lse: Float32Array, dout: Float32Array, dq: Float32Array, dk: Float32Array, dv: Float32Array): void {
  const { batch, heads, kvHeads, tq, tk, dqk, scale } = p;
  if (p.kvBatch) throw new RangeError('attentionBackwardBf16: kvBatch is forward only');
  const dvDim = p.dv;
  const qb = rounded(q);
  const kb16 = rounded(k);
  const vb = rounded(v);
  const gb = rounded(dout);
  // float64 sums, written to the float32 outputs at the end
  const dq64 = new Float64Array(dq.length);
  const dk64 = new Float64Array(dk.length);
  const dv64 = new Float64Array(dv.length);
  for (let b = 0; b < batch; b++) {
    const causalOffset = offsetOf(p, b);
    for (let h = 0; h < heads; h++) {
      const hk = kvHeads === 1 ? 0 : h;
      for (let i = 0; i < tq; i++) {
        const qo = at(p.qStrides, b, i, h);
        const oo = at(p.oStrides, b, i, h);
        const l = lse[(b * heads + h) * tq + i]!;
        const last = Math.min(tk - 1, i + causalOffset);
        let dsum = 0;
        for (let d = 0; d < dvDim; d++) dsum += gb[oo + d]! * out[oo + d]!;
        for (let j = 0; j <= last; j++) {
          const ko = at(p.kStrides, b, j, hk);
          const vo = at(p.vStrides, b, j, hk);
          let s = 0;
          for (let d = 0; d < dqk; d++) s += qb[qo + d]! * kb16[ko + d]!;
          const pr = Math.exp(s * scale - l);
          const pb = bf16(pr);
          let dp = 0;
          for (let d = 0; d < dvDim; d++) {
            dp += gb[oo + d]! * vb[vo + d]!;
            dv64[vo + d] = dv64[vo + d]! + pb * gb[oo + d]!;
          }
          const ds = bf16(pr * (dp - dsum) * scale);
          for (let d = 0; d < dqk; d++) {
            dq64[qo + d] = dq64[qo + d]! + ds * kb16[ko + d]!;
            dk64[ko + d] = dk64[ko + d]! + ds * qb[qo + d]!;
          }
        }
      }
    }
  }
  // overwrite exactly the elements of the three layouts (dk and dv may share one buffer)
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) for (let i = 0; i < tq; i++) for (let d = 0; d < dqk; d++) dq[at(p.qStrides, b, i, h) + d] = 0;
    for (let h = 0; h < kvHeads; h++) {
      for (let j = 0; j < tk; j++) {
        for (let d = 0; d < dqk; d++) dk[at(p.kStrides, b, j, h) + d] = 0;
        for (let d = 0; d < dvDim; d++) dv[at(p.vStrides, b, j, h) + d] = 0;
      }
    }
  }
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) for (let i = 0; i < tq; i++) for (let d = 0; d < dqk; d++) { const o = at(p.qStrides, b, i, h) + d; dq[o] = dq64[o]!; }
    for (let h = 0; h < kvHeads; h++) {
      for (let j = 0; j < tk; j++) {
        for (let d = 0; d < dqk; d++) { const o = at(p.kStrides, b, j, h) + d; dk[o] = dk[o]! + dk64[o]!; }
        for (let d = 0; d < dvDim; d++) { const o = at(p.vStrides, b, j, h) + d; dv[o] = dv[o]! + dv64[o]!; }
      }
    }
  }
}
