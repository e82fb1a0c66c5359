/**
 * The kernel interface: math on flat buffers, nothing else. Two implementations exist with
 * exactly this interface:
 *   - `reference` (src/engine/reference/): pure TypeScript, simple loops, the oracle in tests
 *     and the fallback when the native addon cannot load;
 *   - `native` (src/engine/native.ts -> native/src/): the Node-API addon, AVX-512/AVX2/scalar
 *     chosen at run time, multi-threaded.
 * Autograd, tensors and the model live above this line and never touch SIMD or threads.
 *
 * Conventions: all matrices are row-major. A typed array argument starts at element 0 of the
 * operand (callers pass `subarray` views for offsets). Leading dimensions (lda, ldb, ldc) are
 * in elements. Outputs are written, never resized. Sizes are validated by the callers in TS;
 * the native bindings check them again and throw RangeError before touching memory.
 */
import type { Fp8TrainingKernels } from './kernels-fp8.js';

export interface Kernels extends Fp8TrainingKernels {
  readonly name: 'native' | 'reference';

  // ---- GEMM -------------------------------------------------------------------------------
  /**
   * C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C[m,n].
   * op(A) = A ([m,k], lda >= k) or A^T (A stored [k,m], lda >= m); likewise B ([k,n] or [n,k]).
   * beta is 0 (C overwritten; its old contents, even NaN, are ignored) or any other value.
   */
  gemm(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
    a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number): void;
  /**
   * A batch of independent GEMMs sharing the transposes, alpha, beta and leading dimensions:
   * C_i = alpha * op(A_i) * op(B_i) + beta * C_i with (m_i, n_i, k_i) = dims[3i .. 3i+2], for
   * i < dims.length / 3 (operands as, bs, cs: one array per GEMM, e.g. subarray views). The
   * GEMMs may run concurrently (the native kernel runs each on one thread, largest first), so
   * C regions must not overlap (if they do, they run in order, one at a time).
   */
  gemmBatch(transA: boolean, transB: boolean, dims: Int32Array, alpha: number, as: readonly Float32Array[], lda: number,
    bs: readonly Float32Array[], ldb: number, beta: number, cs: readonly Float32Array[], ldc: number): void;
  /**
   * Same as gemm but B holds bfloat16 bit patterns (Uint16Array). A is float32 and is rounded
   * to bfloat16 (round-to-nearest-even) before multiplying; accumulation is float32.
   */
  gemmBf16(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
    a: Float32Array, lda: number, b: Uint16Array, ldb: number, beta: number, c: Float32Array, ldc: number): void;
  /**
   * gemmBatch with gemmBf16's operands: every B_i holds bfloat16 bits, every A_i is rounded to
   * bfloat16; float32 accumulation (BF16 mixed-precision training: the grouped experts).
   */
  gemmBatchBf16(transA: boolean, transB: boolean, dims: Int32Array, alpha: number, as: readonly Float32Array[], lda: number,
    bs: readonly Uint16Array[], ldb: number, beta: number, cs: readonly Float32Array[], ldc: number): void;
  /**
   * The routed experts of several token rows in one call (float32 weights; batched decode and
   * the speculative verification forward): for expert e with rows offsets[e] .. offsets[e+1]-1
   * of x [rows, D] (rows = offsets[E]), g = x W_gate[e]^T and u = x W_up[e]^T ([rows, I] each,
   * weights [I, D]), act = silu(g) * u (siluMul's formula), y = act W_down[e]^T ([rows, D],
   * W_down [D, I]). Each weight row is read once for all of its expert's rows.
   */
  moeRows(x: Float32Array, offsets: Int32Array, gates: readonly Float32Array[], ups: readonly Float32Array[],
    downs: readonly Float32Array[], D: number, I: number, g: Float32Array, u: Float32Array, act: Float32Array, y: Float32Array): void;
  /** moeRows with bf16 weights (bits): x and act are rounded to bf16 before their products, float32
   * accumulation (gemmBf16's rule). */
  moeRowsBf16(x: Float32Array, offsets: Int32Array, gates: readonly Uint16Array[], ups: readonly Uint16Array[],
    downs: readonly Uint16Array[], D: number, I: number, g: Float32Array, u: Float32Array, act: Float32Array, y: Float32Array): void;
  /**
   * gemmBf16 with A also given as bfloat16 bits (an operand rounded once and read by several
   * GEMMs, e.g. dY by Dgrad and Wgrad, or a saved bf16 activation): the same result as gemmBf16
   * of A widened to float32, without re-rounding A in every GEMM (the native kernel reads the
   * bf16 pairs in place or packs them without rounding).
   */
  gemmBf16Ab(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
    a: Uint16Array, lda: number, b: Uint16Array, ldb: number, beta: number, c: Float32Array, ldc: number): void;
  /** gemmBatchBf16 with every A_i also bfloat16 bits (gemmBf16Ab per GEMM). */
  gemmBatchBf16Ab(transA: boolean, transB: boolean, dims: Int32Array, alpha: number, as: readonly Uint16Array[], lda: number,
    bs: readonly Uint16Array[], ldb: number, beta: number, cs: readonly Float32Array[], ldc: number): void;
  /**
   * out[i] = bfloat16 bits of x[i], round to nearest even (NaN stays a quiet NaN, subnormals
   * are kept: the rounding gemmBf16 applies to A), for i < n.
   */
  bf16Round(x: Float32Array, out: Uint16Array, n: number): void;
  /**
   * bf16Round of a row-major [rows, cols] x into rows ldo >= cols apart (out[r*ldo + c]; the
   * padding is not written): a GEMM operand whose rows are padded off a multiple of 4 KB (a
   * transposed A read across rows 8 KB apart misses the cache: the output head's P - Y).
   */
  bf16RoundRows(x: Float32Array, out: Uint16Array, rows: number, cols: number, ldo: number): void;
  /** out[i] = the float32 value of the bfloat16 bits h[i] (exact), for i < n. */
  bf16Widen(h: Uint16Array, out: Float32Array, n: number): void;

  /**
   * Linear layer with FP8 block-scaled weights (DeepSeek-V3 checkpoints): y[m,n] = x[m,k] · W^T,
   * W [n,k] given as E4M3 codes with float32 scales scaleInv [ceil(n/128), ceil(k/128)], where
   * W[i,j] = float32(e4m3(codes[i,j]) * scaleInv[i/128, j/128]). Weights are decoded inside the
   * kernel (never a dequantised copy of the matrix); x is float32, accumulation float32.
   * y is overwritten (beta 0) or accumulated into (beta 1).
   */
  linearFp8(m: number, n: number, k: number, x: Float32Array, codes: Uint8Array, scaleInv: Float32Array,
    beta: number, y: Float32Array): void;
  /**
   * The FP8 block-scaled weight used untransposed: y[m,n] = x[m,k] · W, W [k,n] given as E4M3
   * codes [k][n] with scales scaleInv [ceil(k/128), ceil(n/128)], W[p,c] =
   * float32(e4m3(codes[p,c]) * scaleInv[p/128, c/128]); each y summed over p in order, float32.
   * y is overwritten. MLA's absorbed W^UK on an FP8 kv_b_proj read in place (paper section 2.1.2).
   */
  linearFp8T(m: number, n: number, k: number, x: Float32Array, codes: Uint8Array, scaleInv: Float32Array,
    y: Float32Array): void;
  /**
   * The experts of ONE token (batch-1 decode), DeepSeekMoE (paper Eq. 12) on the row x [D]:
   *   h[D] += sum_e alpha_e * down_e(silu(gate_e x) * up_e x)
   * over E = inters.length experts in order, expert e of width inters[e] with weights
   * weights[3e] (gate [I_e, D]), weights[3e+1] (up [I_e, D]), weights[3e+2] (down [D, I_e]) as
   * bfloat16 bits. Each expert's arithmetic is that of gemmBf16 (gate, up; x rounded to bf16),
   * siluMul, gemmBf16(down, alpha_e, beta 1): the same h as those calls, bit for bit, in one call
   * (the native kernel spreads the experts' rows over the threads with two barriers).
   * scratch: at least 5*S + 2*D + 64 float32 elements (S = sum of the widths); h must not
   * overlap x or scratch.
   */
  moeRowBf16(D: number, inters: Int32Array, alphas: Float32Array, weights: readonly Uint16Array[], x: Float32Array,
    h: Float32Array, scratch: Float32Array): void;
  /**
   * moeRowBf16 for FP8 weights (codes[3e+t] with block scales scales[3e+t], as linearFp8): per
   * expert linearFp8 gate and up, siluMul, act *= alpha_e (float32), linearFp8(down, beta 1).
   */
  moeRowFp8(D: number, inters: Int32Array, alphas: Float32Array, codes: readonly Uint8Array[],
    scales: readonly Float32Array[], x: Float32Array, h: Float32Array, scratch: Float32Array): void;

  // ---- elementwise (contiguous, n elements; out may alias a or b) -------------------------
  /** out = a (op) b with op 0 add, 1 sub, 2 mul, 3 div. */
  binary(op: BinaryOp, a: Float32Array, b: Float32Array, out: Float32Array, n: number): void;
  /** y += alpha * x (gradient accumulation). */
  axpy(alpha: number, x: Float32Array, y: Float32Array, n: number): void;

  // ---- row gather / scatter (MoE dispatch and combine) --------------------------------------
  /**
   * dst[i, :] = src[idx[i], :] * s_i for i < rows (rows of `cols` floats; s_i = scale[i], or 1
   * when scale is null). Indices are validated by the callers (0 <= idx[i] < src rows).
   */
  gatherRows(src: Float32Array, idx: Int32Array, scale: Float32Array | null, dst: Float32Array, rows: number, cols: number): void;
  /**
   * gatherRows (no scale) rounded to bf16: dst16[r*cols + c] = bf16 bits of src[idx[r]*cols + c],
   * the bits of gatherRows + bf16Round without the float32 copy (the experts' bf16 GEMM operands).
   */
  gatherRowsBf16(src: Float32Array, idx: Int32Array, dst16: Uint16Array, rows: number, cols: number): void;
  /**
   * dst[idx[i], :] += s_i * src[i, :] for i = 0, 1, ... in order (repeated indices accumulate;
   * each element is one fused multiply-add, rounded once).
   */
  scatterAddRows(src: Float32Array, idx: Int32Array, scale: Float32Array | null, dst: Float32Array, rows: number, cols: number): void;
  /** out[i] = Σ_j a[i, j] * b[i, j] (per-row dot products). */
  rowDot(a: Float32Array, b: Float32Array, out: Float32Array, rows: number, cols: number): void;
  /** y[i, :] = s[i] * x[i, :]; y may alias x. With y16, also bf16Round of y into y16 in the same pass. */
  scaleRows(x: Float32Array, s: Float32Array, y: Float32Array, rows: number, cols: number, y16?: Uint16Array): void;
  /**
   * For i < n0, j < n1, c < cols: dst[i*ds0 + j*ds1 + c] = src[i*ss0 + j*ss1 + c], or += with
   * `accumulate`. Strides are >= 0; a 0 source stride broadcasts, a 0 destination stride with
   * `accumulate` sums (in order of i, then j).
   */
  copyStrided(src: Float32Array, dst: Float32Array, n0: number, n1: number, cols: number,
    ss0: number, ss1: number, ds0: number, ds1: number, accumulate: boolean): void;
  /**
   * RoPE on a channel range of contiguous rows: y = x (rows of `cols`) with channels
   * [start, start + dr) rotated as interleaved pairs, (a, b) -> (a c - b s, a s + b c), at the
   * position t = floor(r / mid) % T of row r: c = cos[t*dr/2 + i], s = sin[t*dr/2 + i]
   * (-sin when `inverse`). y may alias x.
   */
  ropeRows(x: Float32Array, y: Float32Array, rows: number, cols: number, start: number, dr: number, mid: number, T: number,
    cos: Float32Array, sin: Float32Array, inverse: boolean): void;

  // ---- fused row kernels ------------------------------------------------------------------
  /** y[r,:] = softmax(x[r,:]) over `cols` (max-subtracted). y may alias x. */
  softmax(x: Float32Array, y: Float32Array, rows: number, cols: number): void;
  /** dx = y * (dy - sum(dy * y)) per row. */
  softmaxBackward(y: Float32Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number): void;
  /** y[r,:] = x[r,:] - logsumexp(x[r,:]). */
  logSoftmax(x: Float32Array, y: Float32Array, rows: number, cols: number): void;
  /** dx = dy - exp(y) * sum(dy) per row (y is the log-softmax output). */
  logSoftmaxBackward(y: Float32Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number): void;
  /** RMSNorm: rstd[r] = 1/sqrt(mean(x[r,:]^2) + eps); y = x * rstd[r] * w. */
  rmsNorm(x: Float32Array, w: Float32Array, y: Float32Array, rstd: Float32Array, rows: number, cols: number, eps: number): void;
  /**
   * rmsNorm(x, w, y, rstd, rows, cols, eps) and y16[i] = bf16Round of y[i], in one pass over the
   * rows (a BF16 Linear's input written by the norm in front of it, ops/norm.ts): y and rstd are
   * the bits rmsNorm writes, y16 the bits bf16Round(y) writes.
   */
  rmsNormBf16(x: Float32Array, w: Float32Array, y: Float32Array, y16: Uint16Array, rstd: Float32Array, rows: number, cols: number, eps: number): void;
  /** RMSNorm backward: dx written, dw ACCUMULATED (+=) over rows. */
  rmsNormBackward(x: Float32Array, w: Float32Array, rstd: Float32Array, dy: Float32Array,
    dx: Float32Array, dw: Float32Array, rows: number, cols: number): void;
  /** SwiGLU core: y = silu(g) * u, silu(z) = z * sigmoid(z). */
  siluMul(g: Float32Array, u: Float32Array, y: Float32Array, n: number): void;
  /** dg = dy * u * silu'(g), du = dy * silu(g); dg may be u's buffer and du g's (each element read before it is written). */
  siluMulBackward(g: Float32Array, u: Float32Array, dy: Float32Array, dg: Float32Array, du: Float32Array, n: number): void;
  /**
   * siluMul(g, u, y, n) and bf16Round of g into g16 and of u into u16, in one pass (the bf16
   * SwiGLU's forward: the backward keeps g, u as bf16): the same bits as the three calls.
   */
  siluMulRound(g: Float32Array, u: Float32Array, y: Float32Array, g16: Uint16Array, u16: Uint16Array, n: number): void;
  /**
   * siluMulBackward of g, u given as bf16 bits (widened exactly): the same bits as bf16Widen
   * of both and siluMulBackward, without float32 copies of g and u. With dg16 / du16, also
   * bf16Round of dg / du into them in the same pass (the bf16 experts' GEMM operands).
   */
  siluMulBackwardBf16(g16: Uint16Array, u16: Uint16Array, dy: Float32Array, dg: Float32Array, du: Float32Array, n: number,
    dg16?: Uint16Array, du16?: Uint16Array): void;
  /** siluMul of g, u given as bf16 bits (widened exactly): the bits of bf16Widen + siluMul. */
  siluMulBf16(g16: Uint16Array, u16: Uint16Array, y: Float32Array, n: number): void;
  /**
   * Cross-entropy over a large vocabulary without materialising probabilities:
   * loss[r] = logsumexp(logits[r,:]) - logits[r, targets[r]], lse[r] = logsumexp(logits[r,:]).
   * Rows whose target is < 0 are ignored: loss 0 (lse still written).
   * A target >= vocab is a RangeError.
   */
  crossEntropy(logits: Float32Array, targets: Int32Array, loss: Float32Array, lse: Float32Array, rows: number, vocab: number): void;
  /** dlogits[r,:] = (softmax(logits[r,:]) - onehot(targets[r])) * dloss[r]; ignored rows get 0.
   * dlogits may alias logits (the fused head turns its logits into the gradient in place). */
  crossEntropyBackward(logits: Float32Array, targets: Int32Array, lse: Float32Array, dloss: Float32Array,
    dlogits: Float32Array, rows: number, vocab: number): void;
  /**
   * crossEntropy, and in the same pass over each row the bf16 bits of its gradient with dloss 1:
   * g16[r*ldg + j] = bf16Round((softmax(logits[r,:]) - onehot(targets[r]))[j]) (ignored rows: 0;
   * the padding of rows ldg >= vocab apart is not written; logits are only read). Bit for bit
   * crossEntropy + crossEntropyBackward (dloss 1) + bf16RoundRows: the BF16 output head's P - Y,
   * the A operand of both of its backward GEMMs (ops/linear-cross-entropy.ts).
   */
  crossEntropyGradBf16(logits: Float32Array, targets: Int32Array, loss: Float32Array, lse: Float32Array, g16: Uint16Array,
    rows: number, vocab: number, ldg: number): void;

  // ---- optimizer ----------------------------------------------------------------------------
  /**
   * AdamW update of n elements in place, arithmetic in float64 (each stored value rounded once):
   *   g' = g·gradScale;  m ← b1·m + c1·g';  v ← b2·v + c2·g'·g';
   *   w ← w·decay − (lr/bc1)·m / (sqrt(v/bc2) + eps)   (with the new, unrounded m and v).
   * With wb, also wb[i] = bf16Round of the new w[i] (the step's bf16 copy of the weight,
   * engine/bf16-weights.ts), in the same pass over w.
   */
  adamw(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, n: number, gradScale: number, decay: number,
    b1: number, b2: number, c1: number, c2: number, lr: number, bc1: number, bc2: number, eps: number, wb?: Uint16Array): void;
  /**
   * `adamw` with BF16 moments (paper §3.3.3): m and v hold bfloat16 bit patterns, read widened;
   * the new m and v are computed in float64 as in `adamw` and stored rounded float64 -> float32
   * -> bf16 (nearest even each time; NaN stays NaN), the w update using them unrounded; wb as in `adamw`.
   */
  adamwBf16(w: Float32Array, g: Float32Array, m: Uint16Array, v: Uint16Array, n: number, gradScale: number, decay: number,
    b1: number, b2: number, c1: number, c2: number, lr: number, bc1: number, bc2: number, eps: number, wb?: Uint16Array): void;
  /** Σ x[i]² over n elements, accumulated in float64 (for the global gradient norm). */
  sumSquares(x: Float32Array, n: number): number;

  // ---- fused attention --------------------------------------------------------------------
  /**
   * Causal multi-head attention, tiled (flash-style): out = softmax(scale * q k^T + mask) v.
   * Query i (0-based within tq) sees keys j <= i + p.causalOffset (causalOffset = tk - tq for
   * a prefix cache). kvHeads is 1 (one key/value shared by all heads: MLA's absorbed form) or
   * equal to heads. Element (b, t, h, d) of q is q[b*qStrides[0] + t*qStrides[1] + h*qStrides[2] + d];
   * likewise k, v, out. lse[(b*heads + h)*tq + i] receives the row's log-sum-exp (of the scaled
   * scores) for the backward pass; no [tq, tk] matrix is kept.
   */
  attention(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array): void;
  /**
   * Backward of `attention`, recomputing probabilities tile by tile from lse.
   * dq, dk, dv are OVERWRITTEN (same layouts/strides as q, k, v; with kvHeads 1 the heads'
   * contributions to dk/dv are summed).
   */
  attentionBackward(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array,
    lse: Float32Array, dout: Float32Array, dq: Float32Array, dk: Float32Array, dv: Float32Array): void;
  /**
   * `attention` for BF16 mixed-precision training: its matrix products take bfloat16 operands
   * (round to nearest even) with float32 accumulation, S = scale * bf16(q) bf16(k)^T and
   * O = bf16(P) bf16(v) / l, where P = exp(S - mq ln 2) with mq = ceil(rowmax(S) log2 e) (any
   * integer mq gives the same O: bf16 rounding commutes with powers of two) and l = Σ P
   * unrounded; lse = mq ln 2 + log l. Softmax statistics and accumulators are float32.
   * Definition: reference/attention-bf16.ts.
   */
  attentionBf16(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array): void;
  /**
   * Backward of `attentionBf16` (same arguments as attentionBackward): P = exp(S - lse) with S
   * as in the forward, dP = bf16(dout) bf16(v)^T, D = Σ bf16(dout) * out, dS = bf16(P (dP - D)
   * scale); dv = bf16(P)^T bf16(dout), dq = dS bf16(k), dk = dS^T bf16(q), float32 sums.
   */
  attentionBackwardBf16(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array,
    lse: Float32Array, dout: Float32Array, dq: Float32Array, dk: Float32Array, dv: Float32Array): void;
}

export const enum BinaryOp {
  Add = 0,
  Sub = 1,
  Mul = 2,
  Div = 3,
}

export interface AttentionParams {
  batch: number;
  heads: number;
  kvHeads: number;
  tq: number;
  tk: number;
  dqk: number;
  dv: number;
  scale: number;
  causalOffset: number;
  /**
   * Optional per-batch causal offsets [batch] (continuous batching: each batch is a sequence at
   * its own position): query i of batch b sees keys j <= i + causalOffsets[b]; causalOffset is
   * then not used. Values in (-2^23, 2^23).
   */
  causalOffsets?: Int32Array | null;
  /**
   * Optional per-batch key/value batch [batch], forward only: batch b of q and out reads the
   * keys and values of batch kvBatch[b] (its latent-cache slot), so k and v must cover
   * max(kvBatch) + 1 batches. attentionBackward rejects it.
   */
  kvBatch?: Int32Array | null;
  /** [batch, token, head] strides in elements for q, k, v, out. */
  qStrides: readonly [number, number, number];
  kStrides: readonly [number, number, number];
  vStrides: readonly [number, number, number];
  oStrides: readonly [number, number, number];
}

