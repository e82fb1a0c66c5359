/**
 * MLA's attention in its naive (training) form as one op (DeepSeek-V3 Eqs. 2, 4, 5, 10):
 *   k_{t,i} = [k^C_{t,i} ; k^R_t],  v_{t,i} = v^C_{t,i},  o = softmax(q k^T * scale + causal) v
 * where k^C and v^C are the two halves of each head's kv_b_proj output and the rope key k^R is
 * shared by all heads. The per-head keys are assembled in a scratch buffer (the values are read
 * in place from kv_b_proj's output through strides), then the fused attention kernels run.
 * The backward writes dV straight into the kv_b_proj gradient, copies the k^C part of dK next
 * to it and sums the k^R part over heads: no concatenation, slice or broadcast of the graph
 * is recorded, so none of their copies and zero-padded gradients are made.
 */
import { attach } from '../autograd.js';
import { dropActivations } from '../active-arena.js';
import { kernels } from '../backend.js';
import { scratchF32, scratchScope } from '../scratch.js';
import { shareBf16Copy, toBf16Bits } from './bf16-linear.js';
import type { OverBuffer } from '../arena.js';
import type { AttentionParams } from '../kernels.js';
import { Tensor } from '../tensor.js';
import { alloc, allocUninit, checkF32, dataOf, fmtShape } from './util.js';

export interface MlaAttentionOptions {
  /** Score scale (1/sqrt(dn + dr), times YaRN's mscale^2 where used). */
  scale: number;
  /** Query i sees keys j <= i + causalOffset; default S - T. */
  causalOffset?: number;
  /**
   * BF16 mixed precision (§3.3): the attention core's matrix products, forward and backward,
   * on bfloat16 operands with float32 accumulation (Kernels.attentionBf16); default false.
   */
  bf16?: boolean;
  /**
   * Recomputation instead of storage (DeepSeek-V3 §3.2.3, "Recomputation of RMSNorm and MLA
   * Up-Projection"): the backward gets q and kvb again from `q()` and `kvb()`, which must
   * return exactly the values given (recomputed deterministically from what `from` lists: the
   * compressed latents, or their bf16 copies under bf16, which the op keeps instead of q and
   * kvb). Shapes are checked.
   */
  recompute?: { from: readonly OverBuffer[]; q: () => Tensor; kvb: () => Tensor };
}

// Key / key-gradient scratch, reused by every call (filled and consumed within one call).
// (scratch.ts: from the step arena while the call's scratchScope runs)
const buf = (name: string, n: number): Float32Array => scratchF32(`mla.${name}`, n);

/** K[b,s,h,:] = [kvb[b,s,h,0:dn] ; kPe[b,s,:]] for the rows (b,s) of the batch. */
function assembleKeys(kvb: Float32Array, kPe: Float32Array, K: Float32Array, rows: number, H: number, dn: number, dr: number, W: number): void {
  const dq = dn + dr;
  const k = kernels();
  k.copyStrided(kvb, K, rows, H, dn, H * W, W, H * dq, dq, false);
  k.copyStrided(kPe, K.subarray(dn), rows, H, dr, dr, 0, H * dq, dq, false);
}

/**
 * q [B, T, H, dn + dr] (rope part already rotated), kvb [B, S, H, dn + dv] (kv_b_proj output:
 * k^C then v^C per head), kPe [B, S, 1, dr] or [B, S, dr] (rotated rope key) -> [B, T, H, dv].
 */
export function mlaAttention(q: Tensor, kvb: Tensor, kPe: Tensor, opts: MlaAttentionOptions): Tensor {
  checkF32('mlaAttention', q, 'q');
  checkF32('mlaAttention', kvb, 'kvb');
  checkF32('mlaAttention', kPe, 'kPe');
  const shapes = `q ${fmtShape(q.shape)}, kvb ${fmtShape(kvb.shape)}, kPe ${fmtShape(kPe.shape)}`;
  if (q.ndim !== 4 || kvb.ndim !== 4) throw new Error(`mlaAttention: q and kvb must be 4-D, got ${shapes}`);
  const [B, T, H, dq] = q.shape as [number, number, number, number];
  const [Bk, S, Hk, W] = kvb.shape as [number, number, number, number];
  const dr = kPe.shape[kPe.ndim - 1]!;
  const dn = dq - dr;
  const dv = W - dn;
  const peOk = (kPe.ndim === 3 || (kPe.ndim === 4 && kPe.shape[2] === 1)) && kPe.shape[0] === B && kPe.shape[1] === S;
  if (Bk !== B || Hk !== H || !peOk || dn < 0 || dv < 0) throw new Error(`mlaAttention: inconsistent shapes ${shapes}`);
  if (!opts || !Number.isFinite(opts.scale)) throw new Error('mlaAttention: opts.scale must be a finite number');
  const causalOffset = opts.causalOffset ?? S - T;
  if (!Number.isInteger(causalOffset)) throw new Error(`mlaAttention: causalOffset must be an integer, got ${causalOffset}`);

  const bf16 = opts.bf16 === true;
  const qd = dataOf(q);
  const kvd = dataOf(kvb);
  const ped = dataOf(kPe);
  const p: AttentionParams = {
    batch: B, heads: H, kvHeads: H, tq: T, tk: S, dqk: dq, dv, scale: opts.scale, causalOffset,
    qStrides: [T * H * dq, H * dq, dq], kStrides: [S * H * dq, H * dq, dq], vStrides: [S * H * W, H * W, W], oStrides: [T * H * dv, H * dv, dv],
  };
  const live = B * T * H * dv > 0 && S > 0;
  // the kernels overwrite out, lse, dq, dV and (with the k^C copy) all of dkvb when live
  const y = live ? allocUninit(B * T * H * dv) : alloc(B * T * H * dv);
  const lse = alloc(B * H * T);
  const nK = B * S * H * dq;
  if (live) {
    scratchScope(() => {
      const K = buf('K', nK);
      assembleKeys(kvd, ped, K, B * S, H, dn, dr, W);
      if (bf16) kernels().attentionBf16(p, qd, K, kvd.subarray(dn), y, lse);
      else kernels().attention(p, qd, K, kvd.subarray(dn), y, lse);
    });
  } else lse.fill(-Infinity);
  const out = new Tensor(y, [B, T, H, dv], 'f32');
  if (!q.requiresGrad && !kvb.requiresGrad && !kPe.requiresGrad) return out;

  const rc = opts.recompute;
  const again = (t: Tensor, want: readonly number[], what: string): Float32Array => {
    if (t.dtype !== 'f32' || t.shape.length !== want.length || t.shape.some((s, i) => s !== want[i])) {
      throw new Error(`mlaAttention: the recomputed ${what} ${fmtShape(t.shape)} does not match ${fmtShape(want)}`);
    }
    return dataOf(t);
  };
  // bf16 core: the backward reads O only in D = Σ bf16(dO) O; it keeps O rounded to bf16 (the
  // copy the bf16 o_proj reading O next shares, shareBf16Copy) instead of float32 O (issue 13)
  const ob = bf16 && live ? toBf16Bits(out) : null;
  const nO = y.length;
  const [qShape, kvShape] = [q.shape, kvb.shape];
  const savedQ = rc ? null : qd; // with recomputation the closure keeps neither q nor kvb
  const savedKv = rc ? null : kvd;
  const res = attach(out, 'mlaAttention', [q, kvb, kPe], (g) => {
    const qT = rc ? rc.q() : null;
    const kvT = rc ? rc.kvb() : null;
    const qd = qT ? again(qT, qShape, 'q') : savedQ!;
    const kvd = kvT ? again(kvT, kvShape, 'kvb') : savedKv!;
    const dqb = live ? allocUninit(qd.length) : alloc(qd.length);
    const dkvb = live ? allocUninit(kvd.length) : alloc(kvd.length);
    const dpe = alloc(ped.length);
    if (live) scratchScope(() => {
      const K = buf('K', nK);
      assembleKeys(kvd, ped, K, B * S, H, dn, dr, W);
      const dK = buf('dK', nK);
      const k = kernels();
      const o32 = ob ? buf('O', nO) : y;
      if (ob) k.bf16Widen(ob, o32, nO);
      (bf16 ? k.attentionBackwardBf16 : k.attentionBackward)(p, qd, K, kvd.subarray(dn), o32, lse, dataOf(g), dqb, dK, dkvb.subarray(dn));
      k.copyStrided(dK, dkvb, B * S, H, dn, H * dq, dq, H * W, W, false); // dk^C next to dv^C
      k.copyStrided(dK.subarray(dn), dpe, B * S, H, dr, H * dq, dq, dr, 0, true); // dk^R summed over heads
    });
    dropActivations(qT, kvT); // the recomputed inputs: read
    return [
      q.requiresGrad ? new Tensor(dqb, q.shape, 'f32') : null,
      kvb.requiresGrad ? new Tensor(dkvb, kvb.shape, 'f32') : null,
      kPe.requiresGrad ? new Tensor(dpe, kPe.shape, 'f32') : null,
    ];
  }, rc ? [...rc.from, ped, ob ? null : y] : [qd, kvd, ped, ob ? null : y], [lse, ob]);
  if (ob && res.node) shareBf16Copy(y, ob, res.node);
  return res;
}
