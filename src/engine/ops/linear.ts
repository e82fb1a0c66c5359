/**
 * Linear layer y = x W^T (x [..., in], W [out, in]) as one GEMM (NT) over all leading dims: the
 * MLA projections W^DQ, W^UQ, W^QR, W^DKV, W^UK, W^KR, W^UV, W^O (DeepSeek-V3 Eqs. 1-11), the
 * expert FFNs and the output head.
 *
 * The backward is split into its two halves, each callable on its own:
 *   - `linearGradInput(gy, w)`:  dX = dY W        (the "B" part: needed to continue backward)
 *   - `linearGradWeight(gy, x)`: dW = dY^T X      (the "W" part: needed only by the optimizer)
 * DualPipe (DeepSeek-V3 §3.2.1, following ZeroBubble) runs the two at different times. Inside
 * `deferWeightGrads(fn)`, a backward pass that reaches a linear layer computes dX at once and
 * pushes the dW computation as a closure; calling the closure later accumulates dW into
 * `w.grad`. Outside it, backward computes both at once, accumulating dW straight into the leaf's
 * `w.grad` (no dW tensor handed to autograd and copied again). The gradients are identical
 * either way (the same GEMM on the same saved dY and X); only the time the W part runs changes.
 * `accumulateWeightGrad` (autograd.ts) is that mechanism for any op with weights (groupedExperts,
 * embedding).
 *
 * W may also be a bfloat16 tensor (checkpoint weights kept in bf16): the product uses
 * `kernels().gemmBf16` (x rounded to bf16, float32 accumulation) and W gets no gradient.
 */
import { accumulateWeightGrad, attach, weightGradsDeferred } from '../autograd.js';
import { dropActivations } from '../active-arena.js';
import type { OverBuffer } from '../arena.js';
import { kernels } from '../backend.js';
import { Tensor } from '../tensor.js';
import { as2d, matLayout } from './matmul.js';
import { alloc, allocUninit, checkF32, fmtShape, sameShape } from './util.js';

function checkWeight(op: string, w: Tensor): void {
  if (!(w instanceof Tensor)) throw new TypeError(`${op}: weight must be a Tensor`);
  if (w.dtype !== 'f32' && w.dtype !== 'bf16') throw new TypeError(`${op}: weight must be float32 or bf16, got ${w.dtype} ${fmtShape(w.shape)}`);
  if (w.ndim !== 2) throw new Error(`${op}: weight must be 2-D [out, in], got ${fmtShape(w.shape)}`);
}

/** The gemm operand for W: data from w's offset, whether W is stored transposed ([in, out]), ld. */
function weightOperand(w: Tensor): { data: Float32Array | Uint16Array; stored: 'oi' | 'io'; ld: number; bf16: boolean } {
  if (w.dtype === 'bf16') {
    const c = w.isContiguous() ? w : w.detach().contiguous();
    return { data: c.raw('bf16'), stored: 'oi', ld: Math.max(w.shape[1]!, 1), bf16: true };
  }
  const l = matLayout(w);
  if (!l) return weightOperand(w.detach().contiguous());
  return { data: (w.data as Float32Array).subarray(w.offset), stored: l.trans ? 'io' : 'oi', ld: l.ld, bf16: false };
}

/**
 * Recomputation instead of storage (DeepSeek-V3 §3.2.3) of a Linear's input for its Wgrad: `x()`
 * must return exactly x's elements (row-major, contiguous), recomputed from what `from` lists
 * (held until this backward ran); the returned array is dropped to the step arena once read.
 */
export interface LinearRecompute {
  from: readonly OverBuffer[];
  x: () => Float32Array;
}

/** y = x W^T: x [..., in], w [out, in] -> [..., out]. */
export function linear(x: Tensor, w: Tensor): Tensor {
  return linearWith(x, w, null);
}

/**
 * linear(x, w) whose backward keeps no float32 x when `recomputeInput` is given: its Wgrad reads
 * x recomputed (see LinearRecompute). The same output and gradients.
 */
export function linearWith(x: Tensor, w: Tensor, recomputeInput: LinearRecompute | null): Tensor {
  checkF32('linear', x, 'x');
  checkWeight('linear', w);
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== w.shape[1]) {
    throw new Error(`linear: x ${fmtShape(x.shape)} does not match weight [out, in] ${fmtShape(w.shape)} (last dim of x must be ${w.shape[1]})`);
  }
  const nOut = w.shape[0]!;
  const nIn = w.shape[1]!;
  const x2 = as2d(x);
  const rows = x2.shape[0]!;
  const y = nIn > 0 ? allocUninit(rows * nOut) : alloc(rows * nOut); // the GEMM (beta 0) writes all of y
  if (y.length > 0 && nIn > 0) {
    const wo = weightOperand(w);
    const xd = (x2.data as Float32Array).subarray(x2.offset);
    const ldx = Math.max(x2.strides[0]!, 1);
    // C[rows, out] = X[rows, in] * op(W): W stored [out, in] -> transB; stored [in, out] -> no trans
    if (wo.bf16) kernels().gemmBf16(false, true, rows, nOut, nIn, 1, xd, ldx, wo.data as Uint16Array, wo.ld, 0, y, nOut);
    else kernels().gemm(false, wo.stored === 'oi', rows, nOut, nIn, 1, xd, ldx, wo.data as Float32Array, wo.ld, 0, y, nOut);
  }
  const out = new Tensor(y, [...x.shape.slice(0, -1), nOut], 'f32');
  const wGrad = w.dtype === 'f32' && w.requiresGrad;
  if (!x.requiresGrad && !wGrad) return out;
  const rc = recomputeInput;
  if (rc) return attach(out, 'linear', [x, w], linearBackwardAgain(rc, x.shape, x.requiresGrad, w, wGrad), [...rc.from, w]);
  return attach(out, 'linear', [x, w], (g) => {
    const gx = x.requiresGrad ? linearGradInput(g, w) : null;
    let gw: Tensor | null = null;
    if (wGrad && !accumulateWeightGrad(w, (into, beta) => gradWeightInto(g, x, into, beta))) gw = linearGradWeight(g, x);
    return [gx, gw];
  }, [x, w]); // not the output
}

/** linear's backward with x recomputed for Wgrad (a function of its own: the closure holds no x). */
function linearBackwardAgain(rc: LinearRecompute, xShape: readonly number[], xGrad: boolean, w: Tensor, wGrad: boolean): (g: Tensor) => (Tensor | null)[] {
  return (g) => {
    const gx = xGrad ? linearGradInput(g, w) : null;
    let gw: Tensor | null = null;
    if (wGrad) {
      const xd = rc.x();
      const n = xShape.reduce((a, b) => a * b, 1);
      if (xd.length !== n) throw new Error(`linear: the recomputed input has ${xd.length} elements, not ${n}`);
      const xr = new Tensor(xd, xShape, 'f32');
      if (!accumulateWeightGrad(w, (into, beta) => gradWeightInto(g, xr, into, beta))) gw = linearGradWeight(g, xr);
      if (!weightGradsDeferred()) dropActivations(xd); // the recomputed input: read (a deferred Wgrad reads it later)
    }
    return [gx, gw];
  };
}

/** dX = dY W: gy [..., out], w [out, in] -> [..., in] (no graph recorded). */
export function linearGradInput(gy: Tensor, w: Tensor): Tensor {
  checkF32('linearGradInput', gy, 'gy');
  checkWeight('linearGradInput', w);
  const nOut = w.shape[0]!;
  const nIn = w.shape[1]!;
  if (gy.ndim < 1 || gy.shape[gy.ndim - 1] !== nOut) {
    throw new Error(`linearGradInput: gy ${fmtShape(gy.shape)} does not match weight [out, in] ${fmtShape(w.shape)}`);
  }
  const g2 = as2d(gy);
  const rows = g2.shape[0]!;
  const dx = nOut > 0 ? allocUninit(rows * nIn) : alloc(rows * nIn);
  if (dx.length > 0 && nOut > 0) {
    const wo = weightOperand(w);
    const gd = (g2.data as Float32Array).subarray(g2.offset);
    const ldg = Math.max(g2.strides[0]!, 1);
    // C[rows, in] = G[rows, out] * op(W)[out, in]: W stored [out, in] -> no trans
    if (wo.bf16) kernels().gemmBf16(false, false, rows, nIn, nOut, 1, gd, ldg, wo.data as Uint16Array, wo.ld, 0, dx, nIn);
    else kernels().gemm(false, wo.stored === 'io', rows, nIn, nOut, 1, gd, ldg, wo.data as Float32Array, wo.ld, 0, dx, nIn);
  }
  return new Tensor(dx, [...gy.shape.slice(0, -1), nIn], 'f32');
}

/**
 * dW = dY^T X summed over all leading dims: gy [..., out], x [..., in] -> [out, in] (no graph).
 * With `into` (a contiguous float32 [out, in] tensor), dW is accumulated into it and returned.
 */
export function linearGradWeight(gy: Tensor, x: Tensor, into?: Tensor): Tensor {
  checkF32('linearGradWeight', gy, 'gy');
  checkF32('linearGradWeight', x, 'x');
  const g2 = as2d(gy);
  const x2 = as2d(x);
  const rows = g2.shape[0]!;
  const nOut = g2.shape[1]!;
  const nIn = x2.shape[1]!;
  if (x2.shape[0] !== rows || !sameShape(gy.shape.slice(0, -1), x.shape.slice(0, -1))) {
    throw new Error(`linearGradWeight: leading dims of gy ${fmtShape(gy.shape)} and x ${fmtShape(x.shape)} differ`);
  }
  let dw: Tensor;
  if (into) {
    if (into.dtype !== 'f32' || !into.isContiguous() || !sameShape(into.shape, [nOut, nIn])) {
      throw new Error(`linearGradWeight: the accumulator must be a contiguous float32 [${nOut}, ${nIn}] tensor, got ${into.dtype} ${fmtShape(into.shape)}`);
    }
    dw = into;
  } else dw = Tensor.zeros([nOut, nIn]);
  gradWeightInto(g2, x2, dw, into ? 1 : 0);
  return dw;
}

/** dw = dY^T X (beta 0: dw's old contents ignored) or dw += dY^T X (beta 1); shapes checked by callers. */
function gradWeightInto(gy: Tensor, x: Tensor, dw: Tensor, beta: 0 | 1): void {
  const g2 = as2d(gy);
  const x2 = as2d(x);
  const rows = g2.shape[0]!;
  const nOut = g2.shape[1]!;
  const nIn = x2.shape[1]!;
  if (dw.size === 0) return;
  if (rows === 0) {
    if (beta === 0) dw.f32().fill(0);
    return;
  }
  const gd = (g2.data as Float32Array).subarray(g2.offset);
  const xd = (x2.data as Float32Array).subarray(x2.offset);
  // C[out, in] = G^T[out, rows] * X[rows, in]
  kernels().gemm(true, false, nOut, nIn, rows, 1, gd, Math.max(g2.strides[0]!, 1), xd, Math.max(x2.strides[0]!, 1), beta, dw.f32(), nIn);
}
