/**
 * Tensor: a typed storage buffer plus shape, strides and offset. Views (reshape of contiguous
 * data, transpose/permute, slice, expand) share storage and copy nothing; `contiguous()` copies
 * only when the layout requires it. Compute ops (src/engine/ops/) take float32 tensors; the
 * other dtypes are storage formats with exact conversions (`to`).
 *
 * View methods here are differentiable: their backward maps the gradient back to the source
 * layout (reshape back, transpose back, zero-pad a slice, sum an expansion).
 */
import { allocStorage, bf16ArrayToF32, f32ArrayToBf16, type DType, type Storage, type StorageOf } from './dtype.js';
import { type BufferArena, type OverBuffer } from './arena.js';
import { activeArena, bufferOf } from './active-arena.js';
import { isGradEnabled } from './grad-mode.js';
import { checkShape, contiguousStrides, fmtShape, shapeSize, type Shape } from './layout.js';
import { gatherStrided, padSliceF32, sumToShapeF32 } from './strided.js';

export { contiguousStrides, fmtShape, shapeSize, type Shape } from './layout.js';

// ---- graph recording (the backward walk is autograd.ts) -------------------------------------

export type BackwardFn = (grad: Tensor) => readonly (Tensor | null)[];

/** Where a gradient goes: a leaf tensor (its `.grad`), or the node that produced a non-leaf tensor. */
export type GradTarget = Tensor | GradNode;

export interface GradNode {
  readonly name: string;
  /**
   * Per input: the node that produced it (a non-leaf input), the tensor itself (a leaf that
   * requires grad), or null. The graph holds producers' nodes, not the non-leaf tensors, so an
   * activation's storage lives exactly as long as some op's backward closure (or the caller)
   * still uses it: an op that keeps a compressed copy for its backward (the FP8 Linear's E4M3
   * cache, DeepSeek-V3 §3.3.3) lets the float32 input go.
   */
  inputs: readonly (GradTarget | null)[];
  backward: BackwardFn | null;
  /** Shape of the tensor this node produced (its gradient's shape). */
  readonly shape: Shape;
  /**
   * The step-arena buffers this node's backward may read, held in `arena` (arena.ts `hold`)
   * until the backward ran (autograd.ts then lets them go), so that a dropped activation is
   * reused as soon as the last backward that saved it is done.
   */
  saved?: ArrayBufferLike[];
  arena?: BufferArena | null;
}

/**
 * Records `out` as produced from `inputs` by a differentiable op. `backward(g)` must return one
 * gradient (or null) per input, each with that input's shape. Returns `out`. The closure should
 * capture only what the backward needs: the graph itself keeps no input tensor alive.
 *
 * `saves` lists what the closure reads of the forward's data (tensors or typed arrays: their
 * buffers are held in the step arena until this node's backward ran; `dropActivations`, arena.ts).
 * Omitted, the node holds the buffers of every input and of `out` (always safe); an op that
 * names its saves exactly lets its other inputs be reused as soon as the forward drops them.
 * A closure must not read a dropped buffer it did not list. `owns` are buffers the op made for
 * its backward alone (a bf16 copy, row statistics): held like `saves`, and dropped at once, so
 * they go back to the arena as soon as this node's backward ran (at once when none is recorded).
 */
export function attach(out: Tensor, name: string, inputs: readonly Tensor[], backward: BackwardFn,
  saves?: readonly (OverBuffer | null | undefined)[], owns: readonly (OverBuffer | null | undefined)[] = []): Tensor {
  let any = false;
  for (const t of inputs) if (t.requiresGrad) any = true;
  const arena = activeArena();
  if (!isGradEnabled() || !any) {
    for (const t of owns) if (t && arena) arena.drop(bufferOf(t));
    return out;
  }
  out.requiresGrad = true;
  const node: GradNode = { name, inputs: inputs.map((t) => (t.requiresGrad ? (t.node ?? t) : null)), backward, shape: out.shape };
  if (arena) {
    const held: ArrayBufferLike[] = [];
    for (const t of [...(saves ?? [...inputs, out]), ...owns]) if (t && arena.hold(bufferOf(t))) held.push(bufferOf(t));
    if (held.length > 0) {
      node.saved = held;
      node.arena = arena;
    }
    for (const t of owns) if (t) arena.drop(bufferOf(t));
  }
  out.node = node;
  return out;
}

/** Views: the backward reads no data, only shapes. */
const NO_SAVES: readonly Tensor[] = [];

export class Tensor {
  readonly dtype: DType;
  readonly shape: Shape;
  readonly strides: Shape;
  readonly offset: number;
  readonly data: Storage;
  /** Whether gradients flow to this tensor (parameters, and outputs of ops on them). */
  requiresGrad = false;
  /** Accumulated gradient (leaves only), same shape, float32 contiguous. */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when recorded for backward. */
  node: GradNode | null = null;
  /** Optional name (parameters carry their checkpoint name). */
  name?: string;

  constructor(data: Storage, shape: Shape, dtype: DType, strides?: Shape, offset = 0) {
    checkShape(shape, 'Tensor');
    this.data = data;
    this.shape = shape.slice();
    this.dtype = dtype;
    this.strides = strides ? strides.slice() : contiguousStrides(shape);
    this.offset = offset;
    if (!strides && offset + shapeSize(shape) > data.length) {
      throw new Error(`Tensor: storage of ${data.length} elements is too small for shape ${fmtShape(shape)} at offset ${offset}`);
    }
  }

  // ---- construction ------------------------------------------------------------------------
  static zeros(shape: Shape, dtype: DType = 'f32'): Tensor {
    checkShape(shape, 'zeros');
    return new Tensor(allocStorage(dtype, shapeSize(shape)), shape, dtype);
  }
  static full(shape: Shape, value: number): Tensor {
    const t = Tensor.zeros(shape);
    (t.data as Float32Array).fill(value);
    return t;
  }
  static ones(shape: Shape): Tensor {
    return Tensor.full(shape, 1);
  }
  /** Wraps (does not copy) a Float32Array. */
  static fromF32(data: Float32Array, shape: Shape): Tensor {
    if (shapeSize(shape) !== data.length) throw new Error(`fromF32: ${data.length} values do not fill shape ${fmtShape(shape)}`);
    return new Tensor(data, shape, 'f32');
  }
  /** Wraps (does not copy) an Int32Array. */
  static fromI32(data: Int32Array, shape: Shape): Tensor {
    if (shapeSize(shape) !== data.length) throw new Error(`fromI32: ${data.length} values do not fill shape ${fmtShape(shape)}`);
    return new Tensor(data, shape, 'i32');
  }
  /** Copies numbers into a new float32 (or int32) tensor. */
  static from(values: ArrayLike<number>, shape: Shape = [values.length], dtype: 'f32' | 'i32' = 'f32'): Tensor {
    if (shapeSize(shape) !== values.length) throw new Error(`Tensor.from: ${values.length} values do not fill shape ${fmtShape(shape)}`);
    return dtype === 'f32' ? Tensor.fromF32(Float32Array.from(values), shape) : Tensor.fromI32(Int32Array.from(values), shape);
  }
  static scalar(x: number): Tensor {
    return Tensor.fromF32(Float32Array.of(x), []);
  }
  /** A named leaf: a parameter that requires grad, or (trainable false) a plain buffer. */
  static param(data: Float32Array, shape: Shape, name?: string, trainable = true): Tensor {
    const t = Tensor.fromF32(data, shape);
    t.requiresGrad = trainable;
    if (name !== undefined) t.name = name;
    return t;
  }

  // ---- properties --------------------------------------------------------------------------
  get ndim(): number {
    return this.shape.length;
  }
  get size(): number {
    return shapeSize(this.shape);
  }
  /** Size of dimension d (negative counts from the end). */
  dim(d: number): number {
    return this.shape[this.axis(d)]!;
  }
  /** Normalises a possibly negative axis, with a clear error when out of range. */
  axis(d: number): number {
    const a = d < 0 ? d + this.ndim : d;
    if (!Number.isInteger(a) || a < 0 || a >= this.ndim) throw new Error(`axis ${d} is out of range for a tensor of shape ${fmtShape(this.shape)}`);
    return a;
  }
  isContiguous(): boolean {
    let acc = 1;
    for (let i = this.ndim - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== acc) return false;
      acc *= this.shape[i]!;
    }
    return true;
  }

  /** The float32 elements of a contiguous float32 tensor, as a view (no copy). */
  f32(): Float32Array {
    if (this.dtype !== 'f32') throw new Error(`expected a float32 tensor, got ${this.dtype} ${fmtShape(this.shape)}`);
    if (!this.isContiguous()) throw new Error(`expected a contiguous tensor, got strides ${fmtShape(this.strides)} for shape ${fmtShape(this.shape)} (call .contiguous())`);
    const d = this.data as Float32Array;
    const n = this.size;
    return this.offset === 0 && d.length === n ? d : d.subarray(this.offset, this.offset + n);
  }
  /** The int32 elements of a contiguous int32 tensor (no copy). */
  i32(): Int32Array {
    if (this.dtype !== 'i32') throw new Error(`expected an int32 tensor, got ${this.dtype} ${fmtShape(this.shape)}`);
    if (!this.isContiguous()) throw new Error('expected a contiguous int32 tensor');
    const d = this.data as Int32Array;
    return d.subarray(this.offset, this.offset + this.size);
  }
  /** Raw storage of a contiguous tensor of the given dtype (no copy). */
  raw<D extends DType>(dtype: D): StorageOf[D] {
    if (this.dtype !== dtype) throw new Error(`expected a ${dtype} tensor, got ${this.dtype}`);
    if (!this.isContiguous()) throw new Error(`expected a contiguous ${dtype} tensor`);
    return this.data.subarray(this.offset, this.offset + this.size) as StorageOf[D];
  }

  /** A single element as a number. */
  item(): number {
    if (this.size !== 1) throw new Error(`item(): tensor of shape ${fmtShape(this.shape)} has ${this.size} elements`);
    return this.toF32Array()[0]!;
  }
  /** All elements in row-major order as a new Float32Array (converting the dtype). */
  toF32Array(): Float32Array {
    return this.to('f32').contiguous().f32().slice();
  }
  toArray(): number[] {
    return Array.from(this.dtype === 'i32' ? this.contiguous().i32() : this.toF32Array());
  }

  // ---- copies and dtype conversion ---------------------------------------------------------
  /** Elements copied into a new contiguous storage (any dtype, any layout). */
  private gather(): Storage {
    return gatherStrided(this.data, this.dtype, this.shape, this.strides, this.offset, this.isContiguous());
  }

  /** This tensor if contiguous, else a contiguous copy (differentiable). */
  contiguous(): Tensor {
    if (this.isContiguous()) return this;
    return this.clone();
  }
  /** A contiguous copy that owns its storage (differentiable). */
  clone(): Tensor {
    const out = new Tensor(this.gather(), this.shape, this.dtype);
    return attach(out, 'clone', [this], (g) => [g], NO_SAVES);
  }
  /** The same data, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape, this.dtype, this.strides, this.offset);
  }
  /** Converts to another dtype (float32 <-> bf16 exactly/RNE; f32 <-> i32 by truncation). */
  to(dtype: DType): Tensor {
    if (dtype === this.dtype) return this;
    const src = this.contiguous();
    const n = src.size;
    if (this.dtype === 'bf16' && dtype === 'f32') return Tensor.fromF32(bf16ArrayToF32(src.raw('bf16')), this.shape);
    if (this.dtype === 'f32' && dtype === 'bf16') return new Tensor(f32ArrayToBf16(src.f32()), this.shape, 'bf16');
    if ((this.dtype === 'i32' || this.dtype === 'u8') && dtype === 'f32') return Tensor.fromF32(Float32Array.from(src.data as Int32Array), this.shape);
    if (this.dtype === 'f32' && dtype === 'i32') return Tensor.fromI32(Int32Array.from(src.f32(), (x) => Math.trunc(x)), this.shape);
    throw new Error(`to(): no direct conversion from ${this.dtype} to ${dtype} (FP8 codecs are in src/engine/fp8/codec.ts); size ${n}`);
  }

  // ---- views -------------------------------------------------------------------------------
  /** Same data with a new shape; one dimension may be -1. Copies only if not contiguous. */
  reshape(...dims: number[] | [Shape]): Tensor {
    const req = (Array.isArray(dims[0]) ? dims[0] : dims) as number[];
    const n = this.size;
    let infer = -1;
    let known = 1;
    for (let i = 0; i < req.length; i++) {
      if (req[i] === -1) {
        if (infer >= 0) throw new Error(`reshape: more than one -1 in ${fmtShape(req)}`);
        infer = i;
      } else known *= req[i]!;
    }
    const shape = req.slice();
    if (infer >= 0) {
      if (known === 0 || n % known !== 0) throw new Error(`reshape: cannot reshape ${fmtShape(this.shape)} into ${fmtShape(req)}`);
      shape[infer] = n / known;
    }
    if (shapeSize(shape) !== n) throw new Error(`reshape: cannot reshape ${fmtShape(this.shape)} (${n} elements) into ${fmtShape(req)}`);
    const src = this.contiguous();
    const out = new Tensor(src.data, shape, src.dtype, contiguousStrides(shape), src.offset);
    const inShape = this.shape;
    return attach(out, 'reshape', [src], (g) => [g.reshape(inShape)], NO_SAVES);
  }
  /** Alias of reshape (kept for readers used to PyTorch). */
  view(...dims: number[]): Tensor {
    return this.reshape(...dims);
  }
  /** Swaps two dimensions (a view). */
  transpose(a: number, b: number): Tensor {
    const perm = this.shape.map((_, i) => i);
    const aa = this.axis(a);
    const bb = this.axis(b);
    perm[aa] = bb;
    perm[bb] = aa;
    return this.permute(perm);
  }
  /** Reorders dimensions (a view): out.shape[i] = shape[perm[i]]. */
  permute(perm: readonly number[]): Tensor {
    if (perm.length !== this.ndim) throw new Error(`permute: ${fmtShape(perm)} does not match a tensor of shape ${fmtShape(this.shape)}`);
    const seen = new Set(perm.map((p) => this.axis(p)));
    if (seen.size !== perm.length) throw new Error(`permute: ${fmtShape(perm)} is not a permutation`);
    const p = perm.map((x) => this.axis(x));
    const out = new Tensor(this.data, p.map((i) => this.shape[i]!), this.dtype, p.map((i) => this.strides[i]!), this.offset);
    const inv = new Array<number>(p.length);
    p.forEach((src, i) => (inv[src] = i));
    return attach(out, 'permute', [this], (g) => [g.permute(inv)], NO_SAVES);
  }
  /** Elements start..end-1 along dim (a view). */
  slice(dim: number, start: number, end: number): Tensor {
    const d = this.axis(dim);
    const len = this.shape[d]!;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > len || start > end) {
      throw new Error(`slice: [${start}, ${end}) is out of range for dim ${dim} of size ${len} (shape ${fmtShape(this.shape)})`);
    }
    const shape = this.shape.slice();
    shape[d] = end - start;
    const out = new Tensor(this.data, shape, this.dtype, this.strides, this.offset + start * this.strides[d]!);
    const inShape = this.shape;
    return attach(out, 'slice', [this], (g) => [padSlice(g, inShape, d, start)], NO_SAVES);
  }
  /** Broadcasts size-1 dimensions (and new leading ones) to `shape` (a view, stride 0). */
  expand(shape: Shape): Tensor {
    if (shape.length < this.ndim) throw new Error(`expand: cannot expand ${fmtShape(this.shape)} to fewer dimensions ${fmtShape(shape)}`);
    const lead = shape.length - this.ndim;
    const strides: number[] = [];
    for (let i = 0; i < shape.length; i++) {
      if (i < lead) {
        strides.push(0);
        continue;
      }
      const s = this.shape[i - lead]!;
      if (s === shape[i]) strides.push(this.strides[i - lead]!);
      else if (s === 1) strides.push(0);
      else throw new Error(`expand: cannot expand ${fmtShape(this.shape)} to ${fmtShape(shape)} (dim ${i}: ${s} vs ${shape[i]})`);
    }
    const out = new Tensor(this.data, shape, this.dtype, strides, this.offset);
    const inShape = this.shape;
    return attach(out, 'expand', [this], (g) => [sumToShape(g, inShape)], NO_SAVES);
  }
  /** Inserts a size-1 dimension at d. */
  unsqueeze(d: number): Tensor {
    const a = d < 0 ? d + this.ndim + 1 : d;
    const shape = this.shape.slice();
    shape.splice(a, 0, 1);
    return this.reshape(shape);
  }
  /** Removes a size-1 dimension at d. */
  squeeze(d: number): Tensor {
    const a = this.axis(d);
    if (this.shape[a] !== 1) throw new Error(`squeeze: dim ${d} has size ${this.shape[a]}, not 1`);
    const shape = this.shape.slice();
    shape.splice(a, 1);
    return this.reshape(shape);
  }

  toString(): string {
    return `Tensor(${this.dtype}, ${fmtShape(this.shape)})`;
  }
}

/** Gradient of a slice: g placed at [start, start+len) along dim d of a zero tensor. */
function padSlice(g: Tensor, shape: Shape, d: number, start: number): Tensor {
  return Tensor.fromF32(padSliceF32(g.contiguous().f32(), g.shape[d]!, shape, d, start), shape);
}

/** Sums a broadcast gradient back to `shape` (the reverse of expand/broadcasting). */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (g.shape.length === shape.length && g.shape.every((s, i) => s === shape[i])) return g;
  return Tensor.fromF32(sumToShapeF32(g.contiguous().f32(), g.shape, shape), shape);
}
