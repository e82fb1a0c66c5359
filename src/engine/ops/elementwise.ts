/**
 * Binary elementwise ops with NumPy broadcasting: add, sub, mul, div (b may be a number).
 *
 * Fast paths: same-shape contiguous operands go to `kernels().binary`; a contiguous operand
 * against a contiguous suffix-shaped one (row broadcast, e.g. [N, D] op [D]) and scalars are
 * single typed-array loops; anything else (strided views, general broadcasting) is iterated row
 * by row over the broadcast shape without materialising the expanded operands. The backward
 * reduces each gradient to its operand's shape with `sumToShape`.
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { BinaryOp } from '../kernels.js';
import { Tensor, sumToShape } from '../tensor.js';
import { alloc, allocUninit, broadcastShapes, broadcastStrides, checkF32, sameShape, shapeSize } from './util.js';

const NAMES = ['add', 'sub', 'mul', 'div'] as const;

/** out[oo + j] = a[ao + j*sa] (op) b[bo + j*sb] for j < n. */
function rowOp(op: BinaryOp, a: Float32Array, ao: number, sa: number, b: Float32Array, bo: number, sb: number,
  o: Float32Array, oo: number, n: number): void {
  switch (op) {
    case BinaryOp.Add:
      for (let j = 0; j < n; j++) o[oo + j] = a[ao + j * sa]! + b[bo + j * sb]!;
      break;
    case BinaryOp.Sub:
      for (let j = 0; j < n; j++) o[oo + j] = a[ao + j * sa]! - b[bo + j * sb]!;
      break;
    case BinaryOp.Mul:
      for (let j = 0; j < n; j++) o[oo + j] = a[ao + j * sa]! * b[bo + j * sb]!;
      break;
    case BinaryOp.Div:
      for (let j = 0; j < n; j++) o[oo + j] = a[ao + j * sa]! / b[bo + j * sb]!;
      break;
  }
}

/** x (op) s for a scalar s (or s (op) x when `reversed`). */
function scalarOp(op: BinaryOp, x: Tensor, s: number, reversed: boolean): Tensor {
  const n = x.size;
  const out = alloc(n);
  const sv = Float32Array.of(s);
  if (x.isContiguous()) {
    const xd = x.f32();
    if (reversed) rowOp(op, sv, 0, 0, xd, 0, 1, out, 0, n);
    else rowOp(op, xd, 0, 1, sv, 0, 0, out, 0, n);
    return new Tensor(out, x.shape, 'f32');
  }
  return reversed ? general(op, Tensor.fromF32(sv, []), x) : general(op, x, Tensor.fromF32(sv, []));
}

/** Leading size-1 dims stripped. */
function core(shape: readonly number[]): readonly number[] {
  let i = 0;
  while (i < shape.length && shape[i] === 1) i++;
  return i === 0 ? shape : shape.slice(i);
}

/** True when `small` (ignoring leading 1s) equals the trailing dims of `big`. */
function isSuffix(small: readonly number[], big: readonly number[]): boolean {
  const c = core(small);
  if (c.length > big.length) return false;
  const off = big.length - c.length;
  for (let i = 0; i < c.length; i++) if (c[i] !== big[off + i]) return false;
  return small.length <= big.length;
}

/** General strided broadcasting, iterated one output row (last dim) at a time. */
function general(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShapes(NAMES[op]!, a.shape, b.shape);
  const n = shapeSize(shape);
  const out = alloc(n);
  const nd = shape.length;
  if (n === 0) return new Tensor(out, shape, 'f32');
  const sa = broadcastStrides(a, shape);
  const sb = broadcastStrides(b, shape);
  const ad = a.data as Float32Array;
  const bd = b.data as Float32Array;
  if (nd === 0) {
    rowOp(op, ad, a.offset, 0, bd, b.offset, 0, out, 0, 1);
    return new Tensor(out, shape, 'f32');
  }
  const inner = shape[nd - 1]!;
  const isa = sa[nd - 1]!;
  const isb = sb[nd - 1]!;
  const rows = n / inner;
  const idx = new Array<number>(nd).fill(0);
  let ao = a.offset;
  let bo = b.offset;
  for (let r = 0; r < rows; r++) {
    rowOp(op, ad, ao, isa, bd, bo, isb, out, r * inner, inner);
    for (let i = nd - 2; i >= 0; i--) {
      ao += sa[i]!;
      bo += sb[i]!;
      if (++idx[i]! < shape[i]!) break;
      ao -= idx[i]! * sa[i]!;
      bo -= idx[i]! * sb[i]!;
      idx[i] = 0;
    }
  }
  return new Tensor(out, shape, 'f32');
}

/** a (op) b without recording a graph (also used by other ops' backward passes). */
export function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const ac = a.isContiguous();
  const bc = b.isContiguous();
  if (ac && bc) {
    if (sameShape(a.shape, b.shape)) {
      const n = a.size;
      const out = allocUninit(n); // the kernel writes every element
      if (n > 0) kernels().binary(op, a.f32(), b.f32(), out, n);
      return new Tensor(out, a.shape, 'f32');
    }
    // a size-1 operand with no more dims than the other: the output has the other's shape
    if (b.size === 1 && b.ndim <= a.ndim) return scalarOp(op, a, b.f32()[0]!, false);
    if (a.size === 1 && a.ndim <= b.ndim) return scalarOp(op, b, a.f32()[0]!, true);
    // row broadcast: [..., D] (op) [D] and the mirror image
    const bSmall = isSuffix(b.shape, a.shape);
    if (bSmall || isSuffix(a.shape, b.shape)) {
      const big = bSmall ? a : b;
      const small = bSmall ? b : a;
      const n = big.size;
      const d = small.size;
      const out = alloc(n);
      const bd = big.f32();
      const sd = small.f32();
      if (d > 0) {
        for (let o = 0; o < n; o += d) {
          if (bSmall) rowOp(op, bd, o, 1, sd, 0, 1, out, o, d);
          else rowOp(op, sd, 0, 1, bd, o, 1, out, o, d);
        }
      }
      return new Tensor(out, big.shape, 'f32');
    }
  }
  return general(op, a, b);
}

function binaryOp(op: BinaryOp, a: Tensor, b: Tensor | number): Tensor {
  const name = NAMES[op]!;
  checkF32(name, a, 'a');
  if (typeof b === 'number') {
    const out = scalarOp(op, a, b, false);
    if (!a.requiresGrad) return out;
    return attach(out, name, [a], (g) => {
      if (op === BinaryOp.Add || op === BinaryOp.Sub) return [g];
      return [scalarOp(op, g, b, false)]; // d(a*s) = g*s, d(a/s) = g/s
    }, []); // reads no forward data
  }
  checkF32(name, b, 'b');
  const out = binaryRaw(op, a, b);
  if (!a.requiresGrad && !b.requiresGrad) return out;
  return attach(out, name, [a, b], (g) => {
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    switch (op) {
      case BinaryOp.Add:
        if (a.requiresGrad) ga = sumToShape(g, a.shape);
        if (b.requiresGrad) gb = sumToShape(g, b.shape);
        break;
      case BinaryOp.Sub:
        if (a.requiresGrad) ga = sumToShape(g, a.shape);
        if (b.requiresGrad) gb = scalarOp(BinaryOp.Mul, sumToShape(g, b.shape), -1, false);
        break;
      case BinaryOp.Mul:
        if (a.requiresGrad) ga = sumToShape(binaryRaw(BinaryOp.Mul, g, b), a.shape);
        if (b.requiresGrad) gb = sumToShape(binaryRaw(BinaryOp.Mul, g, a), b.shape);
        break;
      case BinaryOp.Div:
        // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -out/b
        if (a.requiresGrad) ga = sumToShape(binaryRaw(BinaryOp.Div, g, b), a.shape);
        if (b.requiresGrad) {
          const t = binaryRaw(BinaryOp.Div, binaryRaw(BinaryOp.Mul, g, out), b);
          gb = scalarOp(BinaryOp.Mul, sumToShape(t, b.shape), -1, false);
        }
        break;
    }
    return [ga, gb];
  }, op === BinaryOp.Add || op === BinaryOp.Sub ? [] : undefined); // a sum reads no forward data
}

/** a + b (broadcasting). */
export function add(a: Tensor, b: Tensor | number): Tensor {
  return binaryOp(BinaryOp.Add, a, b);
}
/** a - b (broadcasting). */
export function sub(a: Tensor, b: Tensor | number): Tensor {
  return binaryOp(BinaryOp.Sub, a, b);
}
/** a * b (broadcasting). */
export function mul(a: Tensor, b: Tensor | number): Tensor {
  return binaryOp(BinaryOp.Mul, a, b);
}
/** a / b (broadcasting). */
export function div(a: Tensor, b: Tensor | number): Tensor {
  return binaryOp(BinaryOp.Div, a, b);
}
