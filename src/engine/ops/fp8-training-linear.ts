/**
 * FP8 mixed-precision Linear of the DeepSeek-V3 training recipe (paper §3.3, Figure 6; the FP8
 * checkpoint-weight linear of inference is Kernels.linearFp8 instead):
 * y = x W^T (x [..., in], W [out, in] float32 master weight; leading dims of x flattened as in
 * ops/linear.ts), with all three GEMMs on E4M3 operands:
 *   - Fprop  Y  = X W^T : X in 1x128 tiles along K (per token, per 128 channels, §3.3.1),
 *                         W in 128x128 blocks;
 *   - Dgrad  dX = dY W  : dY in 1x128 tiles along N, times W's 128x128-block codes and scales
 *                         transposed (appendix B.2): the Fprop's codes, made again in backward
 *                         from the same master weight (it does not change within a step, so the
 *                         codes are the same bits) rather than kept from the forward;
 *   - Wgrad  dW = dY^T X: dY^T and X^T in 1x128 tiles along M (= 128x1 tiles of dY and X); X^T
 *                         is re-quantised from the FP8 copy of X the forward pass caches
 *                         (§3.3.3 / §3.5.2: "cache the activations in FP8"; fixtures README
 *                         `wgrad_cached`), not from float32 X, which is not kept.
 * Scales are computed online from the current tensor (amax / 448, with the 1e-4 amax floor of the
 * fixtures README). Master weights, outputs and gradients stay float32.
 *
 * The GEMMs run on the codes (`fp8Matmul`, fp8/train-gemm.ts; Kernels.fp8Gemm): each 128-wide
 * block's partial sum of code products is promoted into the float32 accumulator with its two
 * scales, the N_C = 128 promotion of §3.3.2 / Figure 7b that the oracle
 * (test/helpers/fp8-gemm-oracle.ts) computes exactly; the kernel differs from it only by float32
 * summation within a block (bf16 dot products on avx512_bf16 CPUs: every E4M3 value is exact in
 * bf16, every product of two exact in float32), far inside the fixtures' per-row 1e-5
 * (test/fp8-gemm.test.ts checks it on the fixture).
 *
 * Memory (§3.3.3): the backward keeps only X's FP8 copy — codes + tile scales (1 byte per element,
 * for Wgrad) — never the float32 input, and not W's block codes either: the forward gives them
 * back to the step arena after Fprop and Dgrad quantises the (unchanged) master weight again
 * (1 byte per weight element per Linear less held from forward to backward; one more read of W,
 * about 1% of the step's CPU); the
 * graph holds x's producer node, not x (tensor.ts `attach`), so x's storage is freed as soon as
 * nothing else uses it.
 *
 * The backward is split like ops/linear.ts: `fp8LinearGradInput` (Dgrad, the paper's B) and
 * `fp8LinearGradWeight` (Wgrad, the W part that DualPipe defers); inside `deferWeightGrads` the
 * Wgrad runs as a closure that accumulates into `w.grad` later, with the same result.
 */
import { accumulateWeightGrad, attach, isGradEnabled, weightGradsDeferred } from '../autograd.js';
import type { GradNode } from '../tensor.js';
import { groups128, quantBlocks128, quantTiles1x128, type Fp8Blocks, type Fp8Tiles } from '../fp8/quant.js';
import { Fp8GemmLayout, codeBytes, colTilesOperand, dualOperands, fp8Matmul, release, requantOperand, tilesOperand, type Fp8Operand } from '../fp8/train-gemm.js';
import { Tensor } from '../tensor.js';
import { as2d } from './matmul.js';
import { alloc, allocUninit, checkF32, dataOf, fmtShape, sameShape, shapeSize } from './util.js';

export type { Fp8Blocks, Fp8Tiles } from '../fp8/quant.js';

/** A 2-D float32 operand: data, element offset and row stride. */
function rowsOf(t: Tensor): { d: Float32Array; off: number; ld: number; rows: number; cols: number } {
  const t2 = as2d(t);
  const cols = t2.shape[1]!;
  return { d: t2.data as Float32Array, off: t2.offset, ld: Math.max(t2.strides[0]!, cols, 1), rows: t2.shape[0]!, cols };
}

/**
 * The FP8 copy of activations x [..., K] (1x128 tiles along K, as Fprop uses them and the
 * forward pass caches them for Wgrad). When `out` is given, the dequantised values go there too.
 */
export function quantizeFp8Activation(x: Tensor, out: Float32Array | null = null): Fp8Tiles {
  checkF32('quantizeFp8Activation', x, 'x');
  const o = rowsOf(x);
  const q: Fp8Tiles = { rows: o.rows, cols: o.cols, codes: codeBytes(o.rows * o.cols), scales: allocUninit(o.rows * groups128(o.cols)) };
  quantTiles1x128(o.d, o.off, o.ld, o.rows, o.cols, q.codes, q.scales, out);
  return q;
}

/**
 * The FP8 copy of an input that a recorded fp8TrainingLinear made and keeps for Wgrad, by the
 * input's float32 array, while the node that owns the copy has not run its backward: Linears
 * that read the same x (W^DQ and W^DKV of one normalised h, the dense FFN's gate and up
 * projections) quantise it once and share the copy (held by both nodes, arena.ts `hold`). Each
 * arena allocation is a new Float32Array, so a key is never a reused buffer's new contents.
 */
const savedCopies = new WeakMap<Float32Array, { xq: Fp8Tiles; off: number; ld: number; node: GradNode }>();

/**
 * The Fprop operands of the recorded fp8TrainingLinears of trainable weights, by the input's
 * float32 array (weakly: x's storage stays collectable) and then by weight, while that node has
 * not run its backward: X's 1x128-tile copy (kept for Wgrad) and the master weight W (its
 * 128x128-block copy is made again when needed: the same bits within a step), with the input's
 * offset and row stride. For recomputing that Fprop in a later backward (`pendingFp8Fprop`,
 * `fp8LinearFromOperands`; §3.2.3).
 */
const savedFprops = new WeakMap<Float32Array, WeakMap<Tensor, { off: number; ld: number; xq: Fp8Tiles; node: GradNode }>>();

/**
 * The FP8 operands of one recorded Fprop: X in 1x128 tiles, and the float32 master weight W
 * [N, K], which fp8LinearFromOperands quantises in 128x128 blocks again (unchanged within a step:
 * the Fprop's codes and scales).
 */
export interface Fp8Fprop {
  readonly xq: Fp8Tiles;
  readonly w: Tensor;
}

/**
 * The FP8 operands with which a recorded fp8TrainingLinear computed x W^T (x's own float32 array,
 * offset and strides; w trainable and x needing a gradient, so that the node keeps both copies
 * for its backward), while that node's backward has not run; else null. Its buffers stay valid
 * while that node holds them: a reader that runs later must hold them itself (`fp8FpropBuffers`).
 */
export function pendingFp8Fprop(x: Tensor, w: Tensor): Fp8Fprop | null {
  if (x.dtype !== 'f32' || x.ndim < 1) return null;
  const o = rowsOf(x);
  const s = savedFprops.get(o.d)?.get(w);
  if (!s || s.node.backward === null) return null;
  return s.off === o.off && s.ld === o.ld && s.xq.rows === o.rows && s.xq.cols === o.cols ? { xq: s.xq, w } : null;
}

/** The buffers a recomputation from f reads (to list in `attach`'s saves): X's FP8 copy (W is a parameter). */
export function fp8FpropBuffers(f: Fp8Fprop): ArrayBufferView[] {
  return [f.xq.codes, f.xq.scales];
}

/**
 * y = x W^T again from the FP8 operands of a recorded Fprop (`pendingFp8Fprop`), no graph: the
 * same GEMM on the same codes and scales as that forward, so y has the same bits. For the
 * recomputation of MLA's up-projections and of the dense FFN's gate and up projections in
 * backward (§3.2.3; §3.3.3: the backward keeps the FP8 cache, not the float32 activations).
 */
export function fp8LinearFromOperands(f: Fp8Fprop, xShape: readonly number[]): Tensor {
  const { rows: m, cols: k } = f.xq;
  const n = f.w.shape[0]!;
  if (f.w.shape[1] !== k || xShape[xShape.length - 1] !== k || xShape.reduce((a, b) => a * b, 1) !== m * k) {
    throw new Error(`fp8LinearFromOperands: x ${fmtShape(xShape)} (${m}x${k} cached) does not match weight [out, in] [${n}, ${f.w.shape[1]}]`);
  }
  const y = k > 0 ? allocUninit(m * n) : alloc(m * n);
  if (m > 0 && n > 0 && k > 0) {
    const wq = quantizeFp8Weight(f.w); // the Fprop's block codes again (W unchanged within the step)
    fp8Matmul(m, n, k, tilesOf(f.xq), blocksOf(wq, false), 0, y);
    release(wq.codes, wq.scaleInv);
  }
  return new Tensor(y, [...xShape.slice(0, -1), n], 'f32');
}

/** The FP8 copy of a weight w [N, K] (128x128 blocks), the Fprop operand reused by Dgrad. */
export function quantizeFp8Weight(w: Tensor): Fp8Blocks {
  checkWeight('quantizeFp8Weight', w);
  const [n, k] = [w.shape[0]!, w.shape[1]!];
  // per step (the master weight changes every step): from the step arena when one is active
  const q: Fp8Blocks = { rows: n, cols: k, codes: codeBytes(n * k), scaleInv: allocUninit(groups128(n) * groups128(k)) };
  quantBlocks128(dataOf(w), 0, k, n, k, q.codes, q.scaleInv, null);
  return q;
}

function checkWeight(op: string, w: Tensor): void {
  if (!(w instanceof Tensor)) throw new TypeError(`${op}: weight must be a Tensor`);
  if (w.dtype !== 'f32') throw new TypeError(`${op}: weight must be a float32 master weight, got ${w.dtype} ${fmtShape(w.shape)}`);
  if (w.ndim !== 2) throw new Error(`${op}: weight must be 2-D [out, in], got ${fmtShape(w.shape)}`);
}

/**
 * y = x W^T with FP8 Fprop, Dgrad and Wgrad: x [..., in] float32, w [out, in] float32 ->
 * [..., out]. Caches for backward only X's FP8 copy: codes + tile scales (for Wgrad, when w needs
 * a gradient). W's codes + block scales (Dgrad's operand, when x needs a gradient) are given back
 * after Fprop and made again from w in backward: the same bits, as w does not change between a
 * step's forward and backward.
 */
export function fp8TrainingLinear(x: Tensor, w: Tensor): Tensor {
  checkF32('fp8TrainingLinear', x, 'x');
  checkWeight('fp8TrainingLinear', w);
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== w.shape[1]) {
    throw new Error(`fp8TrainingLinear: x ${fmtShape(x.shape)} does not match weight [out, in] ${fmtShape(w.shape)} (last dim of x must be ${w.shape[1]})`);
  }
  const n = w.shape[0]!;
  const k = w.shape[1]!;
  const m = shapeSize(x.shape.slice(0, -1));
  const recording = isGradEnabled() && (x.requiresGrad || w.requiresGrad);
  const wGrad = recording && w.requiresGrad;
  const y = k > 0 ? allocUninit(m * n) : alloc(m * n);
  let xq: Fp8Tiles | null = null;
  let reuse = false;
  if (m > 0 && n > 0 && k > 0) {
    // Fprop operands: X per 1x128 tile (its FP8 copy kept only for Wgrad; one copy for the
    // Linears that read the same x), W per 128x128 block
    const o = rowsOf(x);
    const saved = savedCopies.get(o.d);
    if (saved && saved.node.backward !== null && saved.off === o.off && saved.ld === o.ld && saved.xq.rows === m && saved.xq.cols === k) {
      xq = saved.xq;
      reuse = true;
    } else xq = quantizeFp8Activation(x);
    const wq = quantizeFp8Weight(w);
    fp8Matmul(m, n, k, tilesOf(xq), blocksOf(wq, false), 0, y);
    release(wq.codes, wq.scaleInv); // not kept: Dgrad quantises w again (same codes)
    if (!wGrad && !reuse) release(xq.codes, xq.scales);
    if (!wGrad) xq = null;
  } else if (wGrad) {
    xq = { rows: m, cols: k, codes: new Uint8Array(m * k), scales: new Float32Array(m * groups128(k)) };
  }
  const out = new Tensor(y, [...x.shape.slice(0, -1), n], 'f32');
  if (!recording) return out;
  const xGrad = x.requiresGrad;
  const xqW = xq;
  const y2 = attach(out, 'fp8TrainingLinear', [x, w], (g) => {
    // both GEMMs now (not deferred): dY's two FP8 operands from one read of it (same bits)
    const dual = xGrad && xqW && g.dtype === 'f32' && !weightGradsDeferred() && m > 0 && n > 0 && k > 0 ? dyOperands(g) : null;
    // Dgrad's operand: W's block codes, quantised again from the unchanged master weight (the Fprop's bits)
    const wqB = xGrad ? quantizeFp8Weight(w) : null;
    const gx = wqB ? fp8LinearGradInput(g, wqB, dual?.tiles) : null;
    if (wqB) release(wqB.codes, wqB.scaleInv);
    let gw: Tensor | null = null;
    if (xqW && !accumulateWeightGrad(w, (into, beta) => wgradInto(g, xqW, into.f32(), beta, dual?.cols))) gw = fp8LinearGradWeight(g, xqW, undefined, dual?.cols);
    if (dual) release(dual.tiles, dual.cols);
    return [gx, gw];
  }, [w, ...(reuse ? [xqW?.codes, xqW?.scales] : [])], reuse ? [] : [xqW?.codes, xqW?.scales]);
  // ^ X's FP8 copy (its own, or shared), not x: a dropped x is reused
  if (xqW && !reuse && y2.node && m > 0 && k > 0) {
    const o = rowsOf(x);
    savedCopies.set(o.d, { xq: xqW, off: o.off, ld: o.ld, node: y2.node });
  }
  if (xqW && xGrad && y2.node && m > 0 && n > 0 && k > 0) {
    const o = rowsOf(x); // the Fprop operands: X's copy held by this node until its backward ran, and w
    let byW = savedFprops.get(o.d);
    if (!byW) savedFprops.set(o.d, (byW = new WeakMap()));
    byW.set(w, { off: o.off, ld: o.ld, xq: xqW, node: y2.node });
  }
  return y2;
}

/**
 * Dgrad: dX = dY W on FP8 operands (no graph recorded): gy [..., N] float32 is quantised per
 * 1x128 tile along N; w is the Fprop FP8 copy (or a float32 weight, quantised per block).
 * Returns [..., K].
 */
export function fp8LinearGradInput(gy: Tensor, w: Fp8Blocks | Tensor, dyTiles?: Fp8Operand): Tensor {
  checkF32('fp8LinearGradInput', gy, 'gy');
  const wq = w instanceof Tensor ? quantizeFp8Weight(w) : w;
  const n = wq.rows;
  const k = wq.cols;
  if (gy.ndim < 1 || gy.shape[gy.ndim - 1] !== n) {
    throw new Error(`fp8LinearGradInput: gy ${fmtShape(gy.shape)} does not match weight [out, in] [${n}, ${k}]`);
  }
  const g = rowsOf(gy);
  const m = g.rows;
  const dx = n > 0 ? allocUninit(m * k) : alloc(m * k);
  if (m > 0 && n > 0 && k > 0) {
    // dX [M, K] = dY [M, N] (1x128 tiles along N) times W^T: the Fprop codes and block scales read transposed
    const dyq = dyTiles ?? tilesOperand(g.d, g.off, g.ld, m, n);
    fp8Matmul(m, k, n, dyq, blocksOf(wq, true), 0, dx);
    if (!dyTiles) release(dyq);
  }
  return new Tensor(dx, [...gy.shape.slice(0, -1), k], 'f32');
}

/**
 * Wgrad: dW = dY^T X on FP8 operands summed over all leading dims (no graph recorded): dY^T
 * per 1x128 tile along M; X^T per 1x128 tile along M, re-quantised from the forward's FP8 copy
 * (`Fp8Tiles`, the training path) or, given a float32 tensor, quantised from it directly
 * (README `wgrad`). Returns [N, K]; with `into` (contiguous float32 [N, K]) accumulates into it.
 */
export function fp8LinearGradWeight(gy: Tensor, x: Fp8Tiles | Tensor, into?: Tensor, dyCols?: Fp8Operand): Tensor {
  checkF32('fp8LinearGradWeight', gy, 'gy');
  if (x instanceof Tensor) checkF32('fp8LinearGradWeight', x, 'x');
  const rows = x instanceof Tensor ? rowsOf(x).rows : x.rows;
  const k = x instanceof Tensor ? x.shape[x.ndim - 1] ?? 1 : x.cols;
  const n = gy.shape[gy.ndim - 1] ?? 1;
  if (rowsOf(gy).rows !== rows || (x instanceof Tensor && !sameShape(gy.shape.slice(0, -1), x.shape.slice(0, -1)))) {
    throw new Error(`fp8LinearGradWeight: leading dims of gy ${fmtShape(gy.shape)} and x (${rows} rows) differ`);
  }
  if (into && (into.dtype !== 'f32' || !into.isContiguous() || !sameShape(into.shape, [n, k]))) {
    throw new Error(`fp8LinearGradWeight: the accumulator must be a contiguous float32 [${n}, ${k}] tensor, got ${into.dtype} ${fmtShape(into.shape)}`);
  }
  const dw = into ?? new Tensor(allocUninit(n * k), [n, k], 'f32');
  wgradInto(gy, x, dw.f32(), into ? 1 : 0, dyCols);
  return dw;
}

/** dw = dY^T X (beta 0: dw's old contents ignored) or dw += dY^T X (beta 1), FP8 operands. */
function wgradInto(gy: Tensor, x: Fp8Tiles | Tensor, dw: Float32Array, beta: 0 | 1, dyCols?: Fp8Operand): void {
  const g = rowsOf(gy);
  const m = g.rows;
  const n = g.cols;
  const k = dw.length / Math.max(n, 1);
  if (dw.length === 0) return;
  if (m === 0) {
    if (beta === 0) dw.fill(0);
    return;
  }
  // dW [N, K] = dY^T [N, M] X [M, K]: both operands in 128x1 tiles of the stored dY and X
  const dyc = dyCols ?? colTilesOperand(contiguousRows(g), m, n);
  let xc: Fp8Operand;
  if (x instanceof Tensor) {
    const o = rowsOf(x);
    xc = colTilesOperand(contiguousRows(o), m, k);
  } else {
    xc = requantOperand(x.codes, x.scales, m, k); // the cached copy's values, re-quantised per 128x1 tile
  }
  fp8Matmul(n, k, m, dyc, xc, beta, dw, k);
  release(xc);
  if (!dyCols) release(dyc);
}

/**
 * dY's 1x128-tile operand (Dgrad) and 128x1-tile operand (Wgrad) from one read of it
 * (`dualOperands`): the codes and scales tilesOperand and colTilesOperand give.
 */
function dyOperands(gy: Tensor): { tiles: Fp8Operand; cols: Fp8Operand } {
  const g = rowsOf(gy);
  return dualOperands(contiguousRows(g), g.rows, g.cols);
}

/** The rows of a 2-D operand as one contiguous array (a copy only when strided). */
function contiguousRows(o: { d: Float32Array; off: number; ld: number; rows: number; cols: number }): Float32Array {
  if (o.ld === o.cols) return o.d.subarray(o.off, o.off + o.rows * o.cols);
  const out = allocUninit(o.rows * o.cols);
  for (let r = 0; r < o.rows; r++) out.set(o.d.subarray(o.off + r * o.ld, o.off + r * o.ld + o.cols), r * o.cols);
  return out;
}

/** The 1x128-tile FP8 copy as a GEMM operand (rows along the output's rows). */
function tilesOf(q: Fp8Tiles): Fp8Operand {
  return { codes: q.codes, scales: q.scales, layout: Fp8GemmLayout.rowsTiles };
}

/** A weight's 128x128-block copy as the B operand: W [N, K] (Fprop) or, transposed, W^T [K, N] (Dgrad). */
function blocksOf(q: Fp8Blocks, transposed: boolean): Fp8Operand {
  return { codes: q.codes, scales: q.scaleInv, layout: transposed ? Fp8GemmLayout.colsBlocks : Fp8GemmLayout.rowsBlocks };
}
