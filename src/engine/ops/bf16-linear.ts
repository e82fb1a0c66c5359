/**
 * BF16 mixed-precision Linear (the `bf16` training precision; docs/ARCHITECTURE.md): y = x W^T
 * (x [..., in] float32, W [out, in] float32 master weight; leading dims flattened as in
 * ops/linear.ts) with all three GEMMs on bfloat16 operands and float32 accumulation:
 *   - Fprop  Y  = X W^T : X rounded to bf16, W the step's bf16 copy (bf16-weights.ts: rounded
 *                         once per optimizer step, not per use). When W needs a gradient, X is
 *                         rounded once into the bf16 copy the backward keeps (a Uint16Array,
 *                         half the bytes of float32; the closure keeps no reference to X's
 *                         float32 data) and Fprop reads that copy (Kernels.gemmBf16Ab);
 *                         otherwise the GEMM rounds X in its packing (Kernels.gemmBf16);
 *   - Dgrad  dX = dY W  : dY rounded to bf16 once for both backward GEMMs, the same bf16 W;
 *   - Wgrad  dW = dY^T X: that bf16 dY and the saved bf16 X.
 * Every product of two bf16 values is exact in float32, so each output is the float32 sum of
 * exact products: it equals the float64 GEMM of the bf16-rounded operands to float32
 * summation-order tolerance (test/ops-bf16.test.ts checks this against the reference kernels).
 * Outputs, gradients and master weights stay float32; dW accumulates into `w.grad` (or is
 * deferred inside `deferWeightGrads`) exactly as ops/linear.ts does.
 */
import { scratchScope, scratchU16 } from '../scratch.js';
import { accumulateWeightGrad, attach, isGradEnabled, weightGradsDeferred, type GradNode } from '../autograd.js';
import { kernels } from '../backend.js';
import { acquireBf16Weight, releaseBf16Weight } from '../bf16-weights.js';
import { dropActivations } from '../active-arena.js';
import { Tensor } from '../tensor.js';
import { as2d } from './matmul.js';
import { alloc, allocUninit, checkF32, dataOf, fmtShape, sameShape } from './util.js';

/** n bf16 slots carved from a float32 allocation, so that the step arena applies. */
export function allocBf16(n: number): Uint16Array {
  const f = allocUninit(Math.ceil(n / 2));
  return new Uint16Array(f.buffer, f.byteOffset, n);
}

/** n bf16 slots of scratch (never handed out): for bits read only within the current call, e.g.
 * a backward's dY, used by its own two GEMMs; from the step arena inside a scratchScope (scratch.ts). */
export function scratchBf16(n: number): Uint16Array {
  return scratchU16('bf16', n);
}

/** The bf16 bits of a float32 tensor's elements (row-major), in a new (arena) buffer. */
export function toBf16Bits(t: Tensor): Uint16Array {
  const d = dataOf(t);
  const out = allocBf16(d.length);
  kernels().bf16Round(d, out, d.length);
  return out;
}

/**
 * The bf16 copy a recorded bf16Linear made of an input, by the input's float32 array, while the
 * node that owns the copy has not run its backward: Linears that read the same x (W^DQ and
 * W^DKV of one normalised h, the gate and up projections of one FFN input) share one copy.
 */
const savedCopies = new WeakMap<Float32Array, { xb: Uint16Array; node: GradNode }>();

/**
 * bf16 bits of a tensor's elements written by the op that produced it, in the same pass as its
 * float32 values (RMSNorm in front of the Linears: ops/norm.ts `bf16Out`): the first recording
 * bf16Linear that reads that tensor takes them as its saved copy instead of rounding x again
 * (the same bits: bf16Round of the same float32 values). Keyed by the tensor object, taken once.
 */
const offered = new WeakMap<Tensor, Uint16Array>();

/** Offers xb (the bf16 bits of every element of the contiguous tensor t) to the next bf16Linear of t. */
export function offerBf16Copy(t: Tensor, xb: Uint16Array): void {
  if (xb.length !== t.size) throw new Error(`offerBf16Copy: ${xb.length} bf16 values for a tensor of ${t.size} elements`);
  offered.set(t, xb);
}

/**
 * Offers xb, the bf16 bits of the float32 array xd, to the bf16Linears that read xd next, while
 * `node` (which owns xb and holds it until its backward) has not run its backward: e.g. the
 * attention output, whose bf16 copy the attention's backward keeps (mla-attention.ts).
 */
export function shareBf16Copy(xd: Float32Array, xb: Uint16Array, node: GradNode): void {
  savedCopies.set(xd, { xb, node });
}

/**
 * bf16 bits of a gradient tensor's elements written by the backward that produced it, in the
 * same pass as its float32 values (the SwiGLU's dG and dU: ops/activation.ts): the backward of
 * the bf16Linear whose output gradient is exactly that tensor takes them as its rounded dY
 * instead of rounding dY again (the same bits: bf16Round of the same float32 values). Keyed by
 * the tensor object (autograd hands a single contribution on as is), taken once.
 */
const offeredGrads = new WeakMap<Tensor, Uint16Array>();

/** Offers gb (the bf16 bits of every element of the contiguous gradient g) to the bf16Linear backward that receives g. */
export function offerBf16Grad(g: Tensor, gb: Uint16Array): void {
  if (gb.length !== g.size) throw new Error(`offerBf16Grad: ${gb.length} bf16 values for a gradient of ${g.size} elements`);
  offeredGrads.set(g, gb);
}

/** y = x W^T in BF16 mixed precision: x [..., in], w [out, in] float32 -> [..., out]. */
export function bf16Linear(x: Tensor, w: Tensor): Tensor {
  checkF32('bf16Linear', x, 'x');
  checkF32('bf16Linear', w, 'weight');
  if (w.ndim !== 2) throw new Error(`bf16Linear: weight must be 2-D [out, in], got ${fmtShape(w.shape)}`);
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== w.shape[1]) {
    throw new Error(`bf16Linear: x ${fmtShape(x.shape)} does not match weight [out, in] ${fmtShape(w.shape)} (last dim of x must be ${w.shape[1]})`);
  }
  const [nOut, nIn] = w.shape as [number, number];
  const x2 = as2d(x).contiguous();
  const rows = x2.shape[0]!;
  const y = nIn > 0 ? allocUninit(rows * nOut) : alloc(rows * nOut);
  const wb = acquireBf16Weight(w);
  const wGrad = w.requiresGrad;
  const recording = isGradEnabled() && (x.requiresGrad || wGrad);
  // what backward keeps: for Wgrad, X in bf16 (rounded once here, and Fprop's A operand); W's
  // bf16 bits are given back after Fprop and made again for Dgrad (bf16-weights.ts: the same
  // bits); the closure captures neither x nor its data: only xb, w, sizes
  // (one copy shared by the Linears that read the same x while its owner has not run backward)
  const xd = dataOf(x2);
  const shared = recording && wGrad ? savedCopies.get(xd) : undefined;
  const reuse = shared && shared.node.backward !== null && shared.xb.length === xd.length ? shared.xb : null;
  let xb: Uint16Array | null = null;
  if (recording && wGrad) {
    const given = reuse ? undefined : offered.get(x);
    if (given) offered.delete(x);
    xb = reuse ?? (given && given.length === xd.length ? given : toBf16Bits(x2));
  }
  if (y.length > 0 && nIn > 0) {
    if (xb) kernels().gemmBf16Ab(false, true, rows, nOut, nIn, 1, xb, nIn, wb, nIn, 0, y, nOut);
    else kernels().gemmBf16(false, true, rows, nOut, nIn, 1, xd, nIn, wb, nIn, 0, y, nOut);
  }
  releaseBf16Weight(wb);
  const out = new Tensor(y, [...x.shape.slice(0, -1), nOut], 'f32');
  if (!recording) return out;
  const xShape = x.shape;
  const xGrad = x.requiresGrad;
  const y2 = attach(out, 'bf16Linear', [x, w], (g) => scratchScope(() => {
    // dY rounded once for Dgrad and Wgrad (into shared scratch unless Wgrad is deferred), or
    // its bits as the producing backward wrote them (offerBf16Grad)
    const given = offeredGrads.get(g);
    if (given) offeredGrads.delete(g);
    const gd = dataOf(as2d(g).contiguous());
    const deferred = weightGradsDeferred();
    let gb: Uint16Array;
    if (given && given.length === gd.length) gb = given;
    else {
      gb = deferred ? allocBf16(gd.length) : scratchBf16(gd.length);
      kernels().bf16Round(gd, gb, gd.length);
    }
    let gx: Tensor | null = null;
    if (xGrad) {
      const wd = acquireBf16Weight(w);
      gx = bf16LinearGradInput(gb, rows, wd, nOut, nIn, xShape);
      releaseBf16Weight(wd);
    }
    let gw: Tensor | null = null;
    if (wGrad && !accumulateWeightGrad(w, (into, beta) => bf16GradWeightInto(gb, nOut, xb!, rows, nIn, into, beta))) {
      gw = Tensor.zeros([nOut, nIn]);
      bf16GradWeightInto(gb, nOut, xb!, rows, nIn, gw, 0);
    }
    if (gb === given && !deferred) dropActivations(given); // read by both GEMMs: back to the arena
    return [gx, gw];
  }), [xb], reuse ? [] : [xb]); // X only as its bf16 copy (its own, or shared): the float32 input can be dropped
  if (xb && !reuse && y2.node) savedCopies.set(xd, { xb, node: y2.node });
  return y2;
}

/**
 * The bf16 copy of x's elements that a recorded bf16Linear of x keeps for its Wgrad (its own, or
 * shared / offered: the bits of bf16Round(x)), while that Linear's backward has not run; else null.
 */
export function pendingBf16Copy(x: Tensor): Uint16Array | null {
  if (x.dtype !== 'f32' || x.ndim < 1 || !x.isContiguous()) return null;
  const s = savedCopies.get(dataOf(as2d(x)));
  return s && s.node.backward !== null && s.xb.length === x.size ? s.xb : null;
}

/**
 * y = x W^T from x's bf16 bits xb (shape xShape [..., in]), no graph: the Fprop a recording
 * bf16Linear with a trainable W runs (Kernels.gemmBf16Ab on the saved copy and the step's bf16 W),
 * so the result has the same bits as that forward's y. For recomputation in backward (§3.2.3).
 */
export function bf16LinearFromBits(xb: Uint16Array, xShape: readonly number[], w: Tensor): Tensor {
  checkF32('bf16LinearFromBits', w, 'weight');
  const [nOut, nIn] = w.shape as [number, number];
  const rows = nIn > 0 ? xb.length / nIn : 0;
  if (w.ndim !== 2 || xShape[xShape.length - 1] !== nIn || xShape.reduce((a, b) => a * b, 1) !== xb.length) {
    throw new Error(`bf16LinearFromBits: ${xb.length} bf16 values of shape ${fmtShape(xShape)} do not match weight [out, in] ${fmtShape(w.shape)}`);
  }
  const y = nIn > 0 ? allocUninit(rows * nOut) : alloc(rows * nOut);
  if (y.length > 0 && nIn > 0) {
    const wb = acquireBf16Weight(w);
    kernels().gemmBf16Ab(false, true, rows, nOut, nIn, 1, xb, nIn, wb, nIn, 0, y, nOut);
    releaseBf16Weight(wb);
  }
  return new Tensor(y, [...xShape.slice(0, -1), nOut], 'f32');
}

/** Dgrad: dX = dY W with dY's bf16 bits gb [rows, out] and W's bf16 bits wb [out, in]. */
export function bf16LinearGradInput(gb: Uint16Array, rows: number, wb: Uint16Array, nOut: number, nIn: number, xShape: readonly number[]): Tensor {
  if (gb.length !== rows * nOut) throw new Error(`bf16LinearGradInput: ${gb.length} dY values for ${rows} rows of ${nOut} outputs`);
  const dx = nOut > 0 ? allocUninit(rows * nIn) : alloc(rows * nIn);
  if (dx.length > 0 && nOut > 0) kernels().gemmBf16Ab(false, false, rows, nIn, nOut, 1, gb, nOut, wb, nIn, 0, dx, nIn);
  return new Tensor(dx, xShape, 'f32');
}

/** Wgrad: dw = dY^T Xb (beta 0) or dw += dY^T Xb (beta 1), dY's bf16 bits gb [rows, out], Xb [rows, in] bf16 bits. */
export function bf16GradWeightInto(gb: Uint16Array, nOut: number, xb: Uint16Array, rows: number, nIn: number, dw: Tensor, beta: 0 | 1): void {
  if (gb.length !== rows * nOut || !sameShape(dw.shape, [nOut, nIn])) {
    throw new Error(`bf16GradWeightInto: ${gb.length} dY values, ${rows} saved rows and dW ${fmtShape(dw.shape)} do not match`);
  }
  if (dw.size === 0) return;
  if (rows === 0) {
    if (beta === 0) dw.f32().fill(0);
    return;
  }
  // C[out, in] = G^T[out, rows] * Xb[rows, in]
  kernels().gemmBf16Ab(true, false, nOut, nIn, rows, 1, gb, nOut, xb, nIn, beta, dw.f32(), nIn);
}
