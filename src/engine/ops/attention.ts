/**
 * Fused causal multi-head attention (DeepSeek-V3 Eq. 10, o_t = Σ_j softmax_j(q_t·k_j / √d) v_j)
 * on kernels().attention, flash-style: the forward keeps only the output and the per-row
 * log-sum-exp; the backward (kernels().attentionBackward) recomputes the probabilities tile by
 * tile, so no [T, S] matrix is ever stored.
 *
 * q [B, T, H, dqk], k [B, S, Hk, dqk], v [B, S, Hk, dv] with Hk = H (per-head keys/values) or
 * Hk = 1 (one latent key/value shared by all heads: MLA in its weight-absorbed form). Operands
 * may be strided views (e.g. `split` parts of one projection) whose last dim is contiguous:
 * their strides go to the kernel, nothing is copied.
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import type { AttentionParams } from '../kernels.js';
import { Tensor } from '../tensor.js';
import { alloc, checkF32, dataOf, fmtShape } from './util.js';

export interface AttentionOptions {
  /** Score scale, usually 1/sqrt(dqk) (times the YaRN mscale^2 where used). */
  scale: number;
  /** Query i sees keys j <= i + causalOffset; default S - T (the queries are the last T). */
  causalOffset?: number;
  /** BF16 operands with float32 accumulation in every matrix product (Kernels.attentionBf16); default false. */
  bf16?: boolean;
}

type Strides3 = readonly [number, number, number];

interface Operand {
  data: Float32Array;
  strides: Strides3;
}

/** Whether the kernel can read t in place: last dim contiguous, no broadcast (stride 0) dims. */
function usable(t: Tensor): boolean {
  if (t.shape[3]! > 1 && t.strides[3] !== 1) return false;
  for (let i = 0; i < 3; i++) if (t.shape[i]! > 1 && t.strides[i] === 0) return false;
  return true;
}

function operand(t: Tensor): Operand {
  const u = usable(t) ? t : t.detach().contiguous();
  return { data: (u.data as Float32Array).subarray(u.offset), strides: [u.strides[0]!, u.strides[1]!, u.strides[2]!] };
}

function contiguousOperand(t: Tensor): Operand {
  const c = t.isContiguous() ? t : t.detach().contiguous();
  return { data: c.f32(), strides: [c.strides[0]!, c.strides[1]!, c.strides[2]!] };
}

/** Elements spanned by a layout: 1 + Σ (n_i - 1) s_i (0 for an empty tensor). */
function span(shape: readonly number[], strides: Strides3): number {
  let s = 1;
  for (let i = 0; i < 3; i++) {
    if (shape[i] === 0) return 0;
    s += (shape[i]! - 1) * strides[i]!;
  }
  return shape[3] === 0 ? 0 : s + shape[3]! - 1;
}

/** Causal attention; returns [B, T, H, dv]. */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  checkF32('attention', q, 'q');
  checkF32('attention', k, 'k');
  checkF32('attention', v, 'v');
  const shapes = `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)}`;
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) throw new Error(`attention: q, k, v must be 4-D [B, T, H, d], got ${shapes}`);
  const [B, T, H, dqk] = q.shape as [number, number, number, number];
  const [Bk, S, Hk, dk] = k.shape as [number, number, number, number];
  const [Bv, Sv, Hv, dv] = v.shape as [number, number, number, number];
  if (Bk !== B || Bv !== B) throw new Error(`attention: batch sizes differ: ${shapes}`);
  if (Sv !== S) throw new Error(`attention: k and v have different lengths: ${shapes}`);
  if (dk !== dqk) throw new Error(`attention: q and k head dims differ: ${shapes}`);
  if (Hv !== Hk || (Hk !== 1 && Hk !== H)) throw new Error(`attention: k/v heads must be 1 or ${H} (q's heads) and equal: ${shapes}`);
  if (!opts || typeof opts.scale !== 'number' || !Number.isFinite(opts.scale)) throw new Error('attention: opts.scale must be a finite number');
  const causalOffset = opts.causalOffset ?? S - T;
  if (!Number.isInteger(causalOffset)) throw new Error(`attention: causalOffset must be an integer, got ${causalOffset}`);

  const qo = operand(q);
  const ko = operand(k);
  const vo = operand(v);
  const oStrides: Strides3 = [T * H * dv, H * dv, dv];
  const p: AttentionParams = {
    batch: B, heads: H, kvHeads: Hk, tq: T, tk: S, dqk, dv, scale: opts.scale, causalOffset,
    qStrides: qo.strides, kStrides: ko.strides, vStrides: vo.strides, oStrides,
  };
  const y = alloc(B * T * H * dv);
  const lse = alloc(B * H * T);
  const bf16 = opts.bf16 === true;
  if (y.length > 0 && S > 0) (bf16 ? kernels().attentionBf16 : kernels().attention)(p, qo.data, ko.data, vo.data, y, lse);
  else lse.fill(-Infinity);
  const out = new Tensor(y, [B, T, H, dv], 'f32');
  if (!q.requiresGrad && !k.requiresGrad && !v.requiresGrad) return out;

  return attach(out, 'attention', [q, k, v], (g) => {
    const dout = dataOf(g);
    // Gradients share their operand's strides (the kernel writes them in that layout) unless
    // the view is sparse in its storage, where the operand is copied to contiguous instead.
    const pick = (t: Tensor, o: Operand): Operand => (span(t.shape, o.strides) <= 2 * t.size ? o : contiguousOperand(t));
    const qb = pick(q, qo);
    const kb = pick(k, ko);
    const vb = pick(v, vo);
    const pb: AttentionParams = { ...p, qStrides: qb.strides, kStrides: kb.strides, vStrides: vb.strides };
    const dq = alloc(span(q.shape, qb.strides));
    const dk = alloc(span(k.shape, kb.strides));
    const dvb = alloc(span(v.shape, vb.strides));
    if (y.length > 0 && S > 0) (bf16 ? kernels().attentionBackwardBf16 : kernels().attentionBackward)(pb, qb.data, kb.data, vb.data, y, lse, dout, dq, dk, dvb);
    const grad = (t: Tensor, buf: Float32Array, s: Strides3): Tensor | null =>
      t.requiresGrad ? new Tensor(buf, t.shape, 'f32', [s[0], s[1], s[2], 1], 0) : null;
    return [grad(q, dq, qb.strides), grad(k, dk, kb.strides), grad(v, dvb, vb.strides)];
  });
}
