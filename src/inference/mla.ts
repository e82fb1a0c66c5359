/**
 * Multi-head Latent Attention for the engine in its absorbed form (paper section 2.1.2),
 * adding u = W^O [o_1; ...; o_H] straight into the residual stream h:
 *
 *   c^Q = q_a_layernorm(W^DQ x);  [q^C ; q^R] = W^UQ c^Q           (Eqs. 6-8; or q_proj(x))
 *   q_lat[h] = W^UK[h]^T q^C[h]                                    (W^UK absorbed into the query)
 *   [c^KV ; k^R] = W^DKV x,  c^KV = kv_a_layernorm(.),  k^R = RoPE(.)   (Eqs. 1, 3)
 *   the row [c^KV ; k^R] is appended to the latent cache at its position;
 *   ctx[h] = sum_j softmax_j(scale (q_lat[h].c^KV_j + RoPE(q^R[h]).k^R_j)) c^KV_j   (Eq. 10)
 *   o[h] = W^UV[h] ctx[h];  h += W^O o                             (Eq. 11, W^UV absorbed after)
 *
 * The attention runs on kernels().attention with one KV head (kvHeads 1) reading K = the
 * cache rows [c^KV ; k^R] and V = their c^KV part in place; the rows of this step sit at
 * positions start .. start+T-1 of each sequence (causal offset = start), or, in continuous
 * batching, each sequence at its own position in its own cache slot (the kernel's per-batch
 * causalOffsets and kvBatch: one call for all rows). W^UK[h] / W^UV[h] are
 * one small GEMM per head each (block-diagonal over heads), on kv_b_proj's bf16 bits in place
 * when it is bf16 (gemmBatchBf16: q^C and ctx rounded to bf16, as the model's absorbed form; plan.ts).
 */
import { absorbOutputFp8, absorbQueryFp8 } from './mla-fp8-heads.js';
import type { Kernels } from '../engine/kernels.js';
import { runLinear } from './linear.js';
import type { AttnPlan, NormPlan } from './plan.js';
import type { PhaseProfiler } from './profile.js';
import type { Workspace } from './workspace.js';

/** RoPE cos/sin tables [positions, dr/2] (YaRN attention factor folded in, as the model's). */
export interface RopeTables {
  readonly cos: Float32Array;
  readonly sin: Float32Array;
  readonly half: number;
}

/**
 * Where this step's rows live: B sequences of T tokens each. Sequence b is cache slot b at
 * positions start .. start+T-1, or, for sequences at their own positions (continuous batching),
 * cache slot slots[b] at positions starts[b] .. starts[b]+T-1.
 */
export interface StepShape {
  B: number;
  T: number;
  start: number;
  /** Per-sequence cache slot [B]; null or absent: sequence b is slot b. */
  slots?: Int32Array | null;
  /** Per-sequence first position [B] (given with slots); null or absent: `start` for all. */
  starts?: Int32Array | null;
}

/** The first position of sequence b. */
export function startOf(shape: StepShape, b: number): number {
  return shape.starts ? shape.starts[b]! : shape.start;
}

/** The cache slot of sequence b. */
export function slotOf(shape: StepShape, b: number): number {
  return shape.slots ? shape.slots[b]! : b;
}

/** One past the last position any sequence of the step writes (the attention's key count). */
export function endOf(shape: StepShape): number {
  if (!shape.starts) return shape.start + shape.T;
  let m = 0;
  for (let b = 0; b < shape.B; b++) m = Math.max(m, shape.starts[b]!);
  return m + shape.T;
}

export function rmsNormRows(kern: Kernels, n: NormPlan, ws: Workspace, x: Float32Array, y: Float32Array, rows: number): void {
  kern.rmsNorm(x, n.w, y, ws.rstd, rows, n.dim, n.eps);
}

const dimsCache = new Map<number, Int32Array[]>();
/** (m, n, k) for each of H heads: the dims of a per-head gemmBatch over m rows (cached per shape). */
function headDims(H: number, m: number, n: number, k: number): Int32Array {
  const key = (H * 65536 + n) * 65536 + k;
  let byM = dimsCache.get(key);
  if (!byM) dimsCache.set(key, (byM = []));
  let d = byM[m];
  if (!d) {
    d = new Int32Array(3 * H);
    for (let h = 0; h < H; h++) d.set([m, n, k], 3 * h);
    byM[m] = d;
  }
  return d;
}

/** Rotates the interleaved pairs of src[so ..] at position pos into dst[dOff ..]. */
function rope(rt: RopeTables, pos: number, src: Float32Array, so: number, dst: Float32Array, dOff: number): void {
  const co = pos * rt.half;
  for (let i = 0; i < rt.half; i++) {
    const c = rt.cos[co + i]!;
    const s = rt.sin[co + i]!;
    const a = src[so + 2 * i]!;
    const b = src[so + 2 * i + 1]!;
    dst[dOff + 2 * i] = a * c - b * s;
    dst[dOff + 2 * i + 1] = a * s + b * c;
  }
}

/**
 * h[M, D] += MLA(input_layernorm(h)) for M = B*T rows, appending the rows' latents to `cache`
 * (this layer's [B, maxLen, r + dr] buffer).
 */
export function attentionAdd(kern: Kernels, p: AttnPlan, inNorm: NormPlan, ws: Workspace, cache: Float32Array, maxLen: number,
  shape: StepShape, rt: RopeTables, prof: PhaseProfiler | null): void {
  const { B, T } = shape;
  const M = B * T;
  const { heads: H, dn, dr, dv, r } = p;
  const W = r + dr;
  const QW = dn + dr;
  const xn = ws.xn;
  rmsNormRows(kern, inNorm, ws, ws.h, xn, M);

  // ---- query: q^C, q^R per head; q_lat = W^UK^T q^C; rope(q^R) next to it ------------------
  const q = ws.q;
  if (p.q) runLinear(kern, p.q, M, xn, q, 0);
  else {
    runLinear(kern, p.qA!, M, xn, ws.qa, 0);
    rmsNormRows(kern, p.qANorm!, ws, ws.qa, ws.qan, M);
    runLinear(kern, p.qB!, M, ws.qan, q, 0);
  }
  const qcat = ws.qcat;
  // the H small per-head GEMMs as one batched call (each head on one thread, one pool barrier
  // instead of H; each head's GEMM computes the same values either way)
  if (p.kvBFp8) absorbQueryFp8(kern, p.kvBFp8, ws, M, H, dn, dr, r);
  else if (p.ukHeadBits) kern.gemmBatchBf16(false, false, headDims(H, M, r, dn), 1, ws.qHead, H * QW, p.ukHeadBits, r, 0, ws.qcatHead, H * W);
  else kern.gemmBatch(false, false, headDims(H, M, r, dn), 1, ws.qHead, H * QW, p.ukHead, r, 0, ws.qcatHead, H * W);
  for (let b = 0; b < B; b++) {
    const start = startOf(shape, b);
    for (let t = 0; t < T; t++) {
      const row = b * T + t;
      for (let h = 0; h < H; h++) rope(rt, start + t, q, (row * H + h) * QW + dn, qcat, (row * H + h) * W + r);
    }
  }
  prof?.lap('attn.q');

  // ---- latent row [c^KV ; k^R] of each new token into the cache ------------------------------
  const kv = ws.kv;
  runLinear(kern, p.kvA, M, xn, kv, 0);
  if (M === 1) {
    // one row: its latent part is contiguous; normalise it, copy it into the cache row
    const start = startOf(shape, 0);
    const off = (slotOf(shape, 0) * maxLen + start) * W;
    kern.rmsNorm(kv, p.kvANorm.w, ws.cn, ws.rstd, 1, r, p.kvANorm.eps);
    const cn = ws.cn;
    for (let i = 0; i < r; i++) cache[off + i] = cn[i]!;
    rope(rt, start, kv, r, cache, off + r);
  } else {
    const c = ws.c;
    for (let row = 0; row < M; row++) c.set(kv.subarray(row * W, row * W + r), row * r);
    rmsNormRows(kern, p.kvANorm, ws, c, ws.cn, M);
    for (let b = 0; b < B; b++) {
      const start = startOf(shape, b);
      const base = slotOf(shape, b) * maxLen;
      for (let t = 0; t < T; t++) {
        const row = b * T + t;
        const off = (base + start + t) * W;
        cache.set(ws.cn.subarray(row * r, (row + 1) * r), off);
        rope(rt, start + t, kv, row * W + r, cache, off + r);
      }
    }
  }
  prof?.lap('attn.kv');

  // ---- attention over the cache: one KV head, K = [c^KV ; k^R], V = c^KV ---------------------
  // (sequences at their own positions: per-sequence causal offsets and cache slots)
  const a = ws.attn;
  a.batch = B;
  a.heads = H;
  a.tq = T;
  a.tk = endOf(shape);
  a.dqk = W;
  a.dv = r;
  if (a.scale !== p.scale) a.scale = p.scale;
  a.causalOffset = shape.start;
  a.causalOffsets = shape.starts ?? null;
  a.kvBatch = shape.slots ?? null;
  a.qStrides[0] = T * H * W;
  a.qStrides[1] = H * W;
  a.qStrides[2] = W;
  a.kStrides[0] = a.vStrides[0] = maxLen * W;
  a.kStrides[1] = a.vStrides[1] = W;
  a.kStrides[2] = a.vStrides[2] = W;
  a.oStrides[0] = T * H * r;
  a.oStrides[1] = H * r;
  a.oStrides[2] = r;
  kern.attention(a, qcat, cache, cache, ws.ctx, ws.lse);
  prof?.lap('attn.core');

  // ---- o[h] = W^UV[h] ctx[h]; h += W^O o ------------------------------------------------------
  if (p.kvBFp8) absorbOutputFp8(kern, p.kvBFp8, ws, M, H, dv, r);
  else if (p.uvHeadBits) kern.gemmBatchBf16(false, true, headDims(H, M, dv, r), 1, ws.ctxHead, H * r, p.uvHeadBits, r, 0, ws.oHead, H * dv);
  else kern.gemmBatch(false, true, headDims(H, M, dv, r), 1, ws.ctxHead, H * r, p.uvHead, r, 0, ws.oHead, H * dv);
  runLinear(kern, p.o, M, ws.o, ws.h, 1);
  prof?.lap('attn.out');
}
