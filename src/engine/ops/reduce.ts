/**
 * Reductions: sum, mean (over all elements or some dims), max along one dim (values, gradient
 * to the first maximal element) and argmax. Sums accumulate in float64.
 */
import { attach } from '../autograd.js';
import { Tensor, sumToShape } from '../tensor.js';
import { alloc, checkF32, dataOf, empty, fmtShape, normDim, reducedShape, sameShape, shapeSize, splitAt } from './util.js';

function reduceDims(op: string, x: Tensor, dim: number | readonly number[] | undefined): number[] {
  if (dim === undefined) return x.shape.map((_, i) => i);
  const list = typeof dim === 'number' ? [dim] : dim;
  const out = list.map((d) => normDim(op, x, d));
  if (new Set(out).size !== out.length) throw new Error(`${op}: repeated dim in [${list.join(', ')}] for shape ${fmtShape(x.shape)}`);
  return out.sort((a, b) => a - b);
}

/** Sum of a contiguous buffer over the reduced dims (float64 accumulation where it matters). */
function sumRaw(x: Tensor, dims: number[]): Tensor {
  const keep = reducedShape(x.shape, dims, true);
  const xd = dataOf(x);
  if (sameShape(keep, x.shape)) return new Tensor(xd.slice(), keep, 'f32'); // nothing to reduce
  // A single contiguous block of reduced dims: [outer, red, inner] -> [outer, inner].
  let contiguousBlock = true;
  for (let i = 1; i < dims.length; i++) if (dims[i] !== dims[i - 1]! + 1) contiguousBlock = false;
  if (!contiguousBlock || dims.length === 0) return sumToShape(new Tensor(xd, x.shape, 'f32'), keep);
  const d0 = dims[0]!;
  const d1 = dims[dims.length - 1]!;
  const outer = shapeSize(x.shape.slice(0, d0));
  const red = shapeSize(x.shape.slice(d0, d1 + 1));
  const inner = shapeSize(x.shape.slice(d1 + 1));
  const out = alloc(outer * inner);
  if (inner === 1) {
    for (let o = 0; o < outer; o++) {
      let s = 0;
      const base = o * red;
      for (let r = 0; r < red; r++) s += xd[base + r]!;
      out[o] = s;
    }
  } else {
    const acc = new Float64Array(inner);
    for (let o = 0; o < outer; o++) {
      acc.fill(0);
      for (let r = 0; r < red; r++) {
        const base = (o * red + r) * inner;
        for (let i = 0; i < inner; i++) acc[i] = acc[i]! + xd[base + i]!;
      }
      out.set(acc, o * inner);
    }
  }
  return new Tensor(out, keep, 'f32');
}

/** Gradient of a reduction to keepShape: g (times c) broadcast back to `shape` (contiguous). */
function broadcastBack(g: Tensor, keepShape: readonly number[], shape: readonly number[], c: number): Tensor {
  const gk = g.reshape(keepShape);
  const out = empty(shape);
  const o = out.f32();
  const gd = dataOf(gk);
  if (gd.length === 1) {
    o.fill(gd[0]! * c);
    return out;
  }
  // iterate out with the strides of gk seen from `shape` (0 on reduced dims)
  const nd = shape.length;
  const gs = new Array<number>(nd).fill(0);
  let acc = 1;
  for (let i = nd - 1; i >= 0; i--) {
    gs[i] = keepShape[i] === 1 && shape[i] !== 1 ? 0 : acc;
    acc *= keepShape[i]!;
  }
  const inner = shape[nd - 1]!;
  const is = gs[nd - 1]!;
  const rows = inner === 0 ? 0 : o.length / inner;
  const idx = new Array<number>(nd).fill(0);
  let go = 0;
  for (let r = 0; r < rows; r++) {
    const ob = r * inner;
    for (let j = 0; j < inner; j++) o[ob + j] = gd[go + j * is]! * c;
    for (let i = nd - 2; i >= 0; i--) {
      go += gs[i]!;
      if (++idx[i]! < shape[i]!) break;
      go -= idx[i]! * gs[i]!;
      idx[i] = 0;
    }
  }
  return out;
}

function sumLike(op: string, x: Tensor, dim: number | readonly number[] | undefined, keepdim: boolean, mean: boolean): Tensor {
  checkF32(op, x);
  const dims = reduceDims(op, x, dim);
  let count = 1;
  for (const d of dims) count *= x.shape[d]!;
  const c = mean ? 1 / count : 1;
  const s = sumRaw(x, dims);
  if (mean) {
    const d = s.f32();
    for (let i = 0; i < d.length; i++) d[i] = d[i]! * c;
  }
  const outShape = reducedShape(x.shape, dims, keepdim);
  const out = keepdim ? s : new Tensor(s.data, outShape, 'f32');
  if (!x.requiresGrad) return out;
  const keep = s.shape;
  const shape = x.shape;
  return attach(out, op, [x], (g) => [broadcastBack(g, keep, shape, c)]);
}

/** Sum over all elements (dim undefined) or over the given dim(s). */
export function sum(x: Tensor, dim?: number | number[], keepdim = false): Tensor {
  return sumLike('sum', x, dim, keepdim, false);
}

/** Mean over all elements (dim undefined) or over the given dim(s). */
export function mean(x: Tensor, dim?: number | number[], keepdim = false): Tensor {
  return sumLike('mean', x, dim, keepdim, true);
}

/** Values and first-occurrence indices of the maximum along dim. */
function maxRaw(op: string, x: Tensor, dim: number): { values: Float32Array; arg: Int32Array; outer: number; len: number; inner: number } {
  checkF32(op, x);
  const d = normDim(op, x, dim);
  const { outer, len, inner } = splitAt(x.shape, d);
  if (len === 0) throw new Error(`${op}: cannot reduce an empty dim ${dim} of shape ${fmtShape(x.shape)}`);
  const xd = dataOf(x);
  const values = alloc(outer * inner);
  const arg = new Int32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * len * inner + i;
      let best = xd[base]!;
      let bi = 0;
      for (let r = 1; r < len && best === best; r++) {
        const v = xd[base + r * inner]!;
        if (v > best || v !== v) {
          best = v;
          bi = r;
          if (v !== v) break; // NaN propagates (first NaN wins)
        }
      }
      values[o * inner + i] = best;
      arg[o * inner + i] = bi;
    }
  }
  return { values, arg, outer, len, inner };
}

/** Maximum along dim (values); the gradient flows to the first maximal element. */
export function max(x: Tensor, dim: number, keepdim = false): Tensor {
  const { values, arg, outer, len, inner } = maxRaw('max', x, dim);
  const d = normDim('max', x, dim);
  const out = new Tensor(values, reducedShape(x.shape, [d], keepdim), 'f32');
  if (!x.requiresGrad) return out;
  const shape = x.shape;
  return attach(out, 'max', [x], (g) => {
    const gd = dataOf(g);
    const dx = empty(shape);
    const o = dx.f32();
    for (let a = 0; a < outer; a++) {
      for (let i = 0; i < inner; i++) {
        const k = a * inner + i;
        o[(a * len + arg[k]!) * inner + i] = gd[k]!;
      }
    }
    return [dx];
  });
}

/** Index (int32) of the first maximum along dim. Not differentiable. */
export function argmax(x: Tensor, dim = -1, keepdim = false): Tensor {
  const { arg } = maxRaw('argmax', x, dim);
  const d = normDim('argmax', x, dim);
  return Tensor.fromI32(arg, reducedShape(x.shape, [d], keepdim));
}
