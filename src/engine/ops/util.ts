/**
 * Shared helpers of the differentiable ops: input validation with errors that name the op and
 * the shapes, graph-free access to contiguous float32 data, broadcasting of shapes, and
 * iteration over the rows (last dimension) of strided tensors.
 */
import { Buffer } from 'node:buffer';
import { arenaF32 } from '../active-arena.js';
import { contiguousStrides, fmtShape, sameShape, shapeSize, type Shape } from '../layout.js';
import { Tensor } from '../tensor.js';

/** Throws unless t is a float32 tensor. */
export function checkF32(op: string, t: Tensor, what = 'input'): void {
  if (!(t instanceof Tensor)) throw new TypeError(`${op}: ${what} must be a Tensor, got ${typeof t}`);
  if (t.dtype !== 'f32') throw new TypeError(`${op}: ${what} must be float32, got ${t.dtype} ${fmtShape(t.shape)}`);
}

/**
 * The contiguous float32 elements of t without recording a graph (a view when t is already
 * contiguous, else a copy). Ops read inputs this way and attach their own backward.
 */
export function dataOf(t: Tensor): Float32Array {
  if (t.isContiguous()) return t.f32();
  return t.detach().contiguous().f32();
}

/** The contiguous int32 elements of an i32 tensor or Int32Array (validated). */
export function indicesOf(op: string, idx: Tensor | Int32Array, what = 'indices'): { data: Int32Array; shape: Shape } {
  if (idx instanceof Int32Array) return { data: idx, shape: [idx.length] };
  if (!(idx instanceof Tensor)) throw new TypeError(`${op}: ${what} must be an Int32Array or an int32 Tensor`);
  if (idx.dtype !== 'i32') throw new TypeError(`${op}: ${what} must be int32, got ${idx.dtype} ${fmtShape(idx.shape)}`);
  return { data: idx.isContiguous() ? idx.i32() : (idx.detach().contiguous().i32()), shape: idx.shape };
}

/** A new float32 tensor wrapping data (no graph). */
export function wrap(data: Float32Array, shape: Shape): Tensor {
  return new Tensor(data, shape, 'f32');
}

/** The shape both operands broadcast to (NumPy rules); the error names the op and both shapes. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da === db || db === 1) out[i] = da;
    else if (da === 1) out[i] = db;
    else throw new Error(`${op}: shapes ${fmtShape(a)} and ${fmtShape(b)} cannot be broadcast together (dim ${i}: ${da} vs ${db})`);
  }
  return out;
}

/** Strides of t as seen from a broadcast shape `to` (0 on broadcast dimensions). */
export function broadcastStrides(t: Tensor, to: Shape): number[] {
  const lead = to.length - t.ndim;
  const s = new Array<number>(to.length).fill(0);
  for (let i = 0; i < t.ndim; i++) s[i + lead] = t.shape[i] === 1 && to[i + lead] !== 1 ? 0 : t.strides[i]!;
  return s;
}

/** Normalises a dim (negative counts from the end) for an op, with an error naming the op. */
export function normDim(op: string, t: Tensor, dim: number): number {
  const a = dim < 0 ? dim + t.ndim : dim;
  if (!Number.isInteger(a) || a < 0 || a >= t.ndim) throw new Error(`${op}: dim ${dim} is out of range for shape ${fmtShape(t.shape)}`);
  return a;
}

/** Sizes before, at and after dimension d. */
export function splitAt(shape: Shape, d: number): { outer: number; len: number; inner: number } {
  let outer = 1;
  let inner = 1;
  for (let i = 0; i < d; i++) outer *= shape[i]!;
  for (let i = d + 1; i < shape.length; i++) inner *= shape[i]!;
  return { outer, len: shape[d]!, inner };
}

/**
 * Start offsets (into t.data) of every row of t, where a row is the last dimension, in
 * row-major order. Works for any strides; callers use it when the last stride is 1.
 */
export function rowStarts(t: Tensor): Int32Array | Float64Array {
  const nd = t.ndim;
  const rows = nd === 0 ? 1 : shapeSize(t.shape.slice(0, nd - 1));
  const out = t.data.length < 0x7fffffff ? new Int32Array(rows) : new Float64Array(rows);
  if (nd <= 1) {
    if (rows) out[0] = t.offset;
    return out;
  }
  const idx = new Array<number>(nd - 1).fill(0);
  let base = t.offset;
  for (let r = 0; r < rows; r++) {
    out[r] = base;
    for (let i = nd - 2; i >= 0; i--) {
      base += t.strides[i]!;
      if (++idx[i]! < t.shape[i]!) break;
      base -= idx[i]! * t.strides[i]!;
      idx[i] = 0;
    }
  }
  return out;
}

/** A contiguous float32 tensor of `shape` over a new buffer. */
export function empty(shape: Shape): Tensor {
  return new Tensor(alloc(shapeSize(shape)), shape, 'f32');
}

/** Shape with dimension d removed (or set to 1 when keepdim). */
export function reducedShape(shape: Shape, dims: readonly number[], keepdim: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    if (dims.includes(i)) {
      if (keepdim) out.push(1);
    } else out.push(shape[i]!);
  }
  return out;
}

export { contiguousStrides, fmtShape, sameShape, shapeSize };

// ---- small-buffer allocation -----------------------------------------------------------------
// Creating an off-heap ArrayBuffer costs ~1 µs, which would dominate ops on tiny tensors. V8
// keeps typed arrays of up to 64 bytes on its heap (cheap), so buffers of up to TINY elements
// (scalars, small vectors) are plain; buffers of up to SMALL elements are carved from 16 KiB
// zero-filled slabs (bump allocation, never reused, 64-byte aligned), freed when no view of
// them remains. (A retained small tensor can thus keep at most one 16 KiB slab alive.)
const TINY = 16;
const SMALL = 256;
const SLAB_BYTES = 16384;
let slab: ArrayBuffer | null = null;
let slabOff = SLAB_BYTES;

/** A zero-filled Float32Array of n elements (from the active step arena when large: arena.ts). */
export function alloc(n: number): Float32Array {
  const pooled = arenaF32(n, true);
  if (pooled) return pooled;
  if (n > SMALL || n <= TINY) return new Float32Array(n);
  const bytes = (n * 4 + 63) & ~63;
  if (slabOff + bytes > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    slabOff = 0;
  }
  const a = new Float32Array(slab!, slabOff, n);
  slabOff += bytes;
  return a;
}

/**
 * A Float32Array of n elements with UNSPECIFIED contents (not zero-filled), for outputs that a
 * kernel overwrites entirely (a GEMM with beta 0, a row kernel writing every row). Skips the
 * memset that calloc does on recycled memory: a training step writes ~0.5 GB of such outputs.
 * Small sizes (where the saving is nil) come from `alloc`.
 */
export function allocUninit(n: number): Float32Array {
  const pooled = arenaF32(n, false);
  if (pooled) return pooled;
  if (n < UNINIT_MIN) return alloc(n);
  const b = Buffer.allocUnsafeSlow(n * 4); // its own ArrayBuffer, byteOffset 0
  return new Float32Array(b.buffer, b.byteOffset, n);
}
const UNINIT_MIN = 4096;
