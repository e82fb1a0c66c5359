/**
 * Reference causal attention (the oracle for the native flash-style kernel): for each query
 * row, scores against every visible key, a max-subtracted softmax, the weighted sum of values.
 * Optional per-batch causal offsets and key/value batches (continuous batching) as in kernels.ts.
 * Backward recomputes the probabilities from the saved log-sum-exp, as the native kernel does.
 */
import type { AttentionParams } from '../kernels.js';

function at(s: readonly [number, number, number], b: number, t: number, h: number): number {
  return b * s[0] + t * s[1] + h * s[2];
}

/** Batch b's causal offset (per batch with causalOffsets). */
function offsetOf(p: AttentionParams, b: number): number {
  return p.causalOffsets ? p.causalOffsets[b]! : p.causalOffset;
}

export function attention(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array): void {
  const { batch, heads, kvHeads, tq, tk, dqk, dv, scale } = p;
  const scores = new Float64Array(tk);
  const acc = new Float64Array(dv);
  for (let b = 0; b < batch; b++) {
    const causalOffset = offsetOf(p, b);
    const kb = p.kvBatch ? p.kvBatch[b]! : b;
    for (let h = 0; h < heads; h++) {
      const hk = kvHeads === 1 ? 0 : h;
      for (let i = 0; i < tq; i++) {
        const qo = at(p.qStrides, b, i, h);
        const last = Math.min(tk - 1, i + causalOffset);
        let m = -Infinity;
        for (let j = 0; j <= last; j++) {
          const ko = at(p.kStrides, kb, j, hk);
          let s = 0;
          for (let d = 0; d < dqk; d++) s += q[qo + d]! * k[ko + d]!;
          s *= scale;
          scores[j] = s;
          if (s > m) m = s;
        }
        let sum = 0;
        acc.fill(0);
        for (let j = 0; j <= last; j++) {
          const e = Math.exp(scores[j]! - m);
          sum += e;
          const vo = at(p.vStrides, kb, j, hk);
          for (let d = 0; d < dv; d++) acc[d] = acc[d]! + e * v[vo + d]!;
        }
        const oo = at(p.oStrides, b, i, h);
        for (let d = 0; d < dv; d++) out[oo + d] = last >= 0 ? acc[d]! / sum : 0;
        lse[(b * heads + h) * tq + i] = last >= 0 ? m + Math.log(sum) : -Infinity;
      }
    }
  }
}

/** dq, dk, dv are overwritten; with kvHeads 1 the heads' contributions to dk, dv are summed. */
export function attentionBackward(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array,
  lse: Float32Array, dout: Float32Array, dq: Float32Array, dk: Float32Array, dv: Float32Array): void {
  const { batch, heads, kvHeads, tq, tk, dqk, scale } = p;
  if (p.kvBatch) throw new RangeError('attentionBackward: kvBatch is forward only');
  const dvDim = p.dv;
  // zero the outputs over their layouts
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) for (let i = 0; i < tq; i++) dq.fill(0, at(p.qStrides, b, i, h), at(p.qStrides, b, i, h) + dqk);
    for (let h = 0; h < kvHeads; h++) {
      for (let j = 0; j < tk; j++) {
        dk.fill(0, at(p.kStrides, b, j, h), at(p.kStrides, b, j, h) + dqk);
        dv.fill(0, at(p.vStrides, b, j, h), at(p.vStrides, b, j, h) + dvDim);
      }
    }
  }
  for (let b = 0; b < batch; b++) {
    const causalOffset = offsetOf(p, b);
    for (let h = 0; h < heads; h++) {
      const hk = kvHeads === 1 ? 0 : h;
      for (let i = 0; i < tq; i++) {
        const qo = at(p.qStrides, b, i, h);
        const oo = at(p.oStrides, b, i, h);
        const l = lse[(b * heads + h) * tq + i]!;
        const last = Math.min(tk - 1, i + causalOffset);
        // D_i = sum_d dout * out
        let dsum = 0;
        for (let d = 0; d < dvDim; d++) dsum += dout[oo + d]! * out[oo + d]!;
        for (let j = 0; j <= last; j++) {
          const ko = at(p.kStrides, b, j, hk);
          const vo = at(p.vStrides, b, j, hk);
          let s = 0;
          for (let d = 0; d < dqk; d++) s += q[qo + d]! * k[ko + d]!;
          const pr = Math.exp(s * scale - l);
          let dp = 0;
          for (let d = 0; d < dvDim; d++) {
            dp += dout[oo + d]! * v[vo + d]!;
            dv[vo + d] = dv[vo + d]! + pr * dout[oo + d]!;
          }
          const ds = pr * (dp - dsum) * scale;
          for (let d = 0; d < dqk; d++) {
            dq[qo + d] = dq[qo + d]! + ds * k[ko + d]!;
            dk[ko + d] = dk[ko + d]! + ds * q[qo + d]!;
          }
        }
      }
    }
  }
}
