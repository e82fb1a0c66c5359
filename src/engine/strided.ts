/**
 * Strided copies and reductions on raw storage: the data loops behind the Tensor views
 * (tensor.ts). A view (transpose/permute, slice, expand) only changes shape, strides and offset;
 * these walk such a layout: `gatherStrided` copies a view into contiguous storage, `padSliceF32`
 * places a slice's gradient into a zero tensor, `sumToShapeF32` sums a broadcast gradient back.
 */
import { allocStorage, type DType, type Storage } from './dtype.js';
import { arenaF32 } from './active-arena.js';
import { shapeSize, type Shape } from './layout.js';

/** The elements of a (shape, strides, offset) view of `src`, copied into new contiguous storage. */
export function gatherStrided(src: Storage, dtype: DType, shape: Shape, strides: Shape, offset: number, contiguous: boolean): Storage {
  const n = shapeSize(shape);
  const out = (dtype === 'f32' ? arenaF32(n, false) : null) ?? allocStorage(dtype, n); // every element is written
  if (contiguous) {
    out.set(src.subarray(offset, offset + n) as never);
    return out;
  }
  const nd = shape.length;
  const inner = shape[nd - 1]!;
  const innerStride = strides[nd - 1]!;
  const idx = new Array<number>(Math.max(nd - 1, 0)).fill(0);
  const rows = inner === 0 ? 0 : n / inner;
  let o = 0;
  for (let r = 0; r < rows; r++) {
    let base = offset;
    for (let i = 0; i < nd - 1; i++) base += idx[i]! * strides[i]!;
    if (innerStride === 1) {
      out.set(src.subarray(base, base + inner) as never, o);
      o += inner;
    } else {
      for (let j = 0; j < inner; j++) out[o++] = src[base + j * innerStride]!;
    }
    for (let i = nd - 2; i >= 0; i--) {
      if (++idx[i]! < shape[i]!) break;
      idx[i] = 0;
    }
  }
  return out;
}

/** Gradient of a slice: `gc` (contiguous, `len` along dim d) placed at [start, start+len) of a zero array of `shape`. */
export function padSliceF32(gc: Float32Array, len: number, shape: Shape, d: number, start: number): Float32Array {
  const o = arenaF32(shapeSize(shape), true) ?? new Float32Array(shapeSize(shape));
  const outer = shapeSize(shape.slice(0, d));
  const inner = shapeSize(shape.slice(d + 1));
  const full = shape[d]!;
  for (let i = 0; i < outer; i++) o.set(gc.subarray(i * len * inner, (i + 1) * len * inner), (i * full + start) * inner);
  return o;
}

/** Sums `gc` (contiguous, shape `gs`) over the dimensions broadcast to reach it from `shape`. */
export function sumToShapeF32(gc: Float32Array, gs: Shape, shape: Shape): Float32Array {
  const nd = gs.length;
  const lead = nd - shape.length;
  const out = arenaF32(shapeSize(shape), true) ?? new Float32Array(shapeSize(shape));
  // strides of out, with 0 where the output dimension is broadcast (size 1 or missing)
  const ostr = new Array<number>(nd).fill(0);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    ostr[i + lead] = shape[i] === 1 && gs[i + lead] !== 1 ? 0 : acc;
    acc *= shape[i]!;
  }
  const inner = gs[nd - 1] ?? 1;
  const innerStride = ostr[nd - 1] ?? 0;
  const idx = new Array<number>(Math.max(nd - 1, 0)).fill(0);
  const rows = gc.length / Math.max(inner, 1);
  let k = 0;
  for (let r = 0; r < rows; r++) {
    let base = 0;
    for (let i = 0; i < nd - 1; i++) base += idx[i]! * ostr[i]!;
    if (innerStride === 1) for (let j = 0; j < inner; j++) out[base + j]! += gc[k++]!;
    else {
      let s = 0;
      for (let j = 0; j < inner; j++) s += gc[k++]!;
      out[base]! += s;
    }
    for (let i = nd - 2; i >= 0; i--) {
      if (++idx[i]! < gs[i]!) break;
      idx[i] = 0;
    }
  }
  return out;
}
