/**
 * Rotary position embedding (RoPE, Su et al. 2021) on interleaved channel pairs, as applied to
 * the decoupled MLA keys and queries k^R_t = RoPE(W^KR h_t) and q^R_t = RoPE(W^QR c^Q_t)
 * (DeepSeek-V3 Eqs. 3 and 8). For position t and pair i (channels 2i, 2i+1):
 *   (a, b) -> (a cos θ_{t,i} - b sin θ_{t,i},  a sin θ_{t,i} + b cos θ_{t,i}).
 * The rotation is orthogonal, so the backward rotates the gradient by -θ.
 * This matches the released DeepSeek-V3 checkpoints' `apply_rotary_emb` (complex view of
 * adjacent pairs).
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { Tensor } from '../tensor.js';
import { allocUninit, checkF32, dataOf, fmtShape, rowStarts, shapeSize } from './util.js';

/** Rotates rows of src (row r starting at starts[r]) into dst (contiguous rows of dr). */
function rotate(src: Float32Array, starts: Int32Array | Float64Array, dst: Float32Array, rows: number, dr: number,
  mid: number, T: number, cos: Float32Array, sin: Float32Array): void {
  const half = dr >> 1;
  for (let r = 0; r < rows; r++) {
    const t = Math.floor(r / mid) % T;
    const so = starts[r]!;
    const o = r * dr;
    const co = t * half;
    for (let i = 0; i < half; i++) {
      const c = cos[co + i]!;
      const s = sin[co + i]!;
      const a = src[so + 2 * i]!;
      const b = src[so + 2 * i + 1]!;
      dst[o + 2 * i] = a * c - b * s;
      dst[o + 2 * i + 1] = a * s + b * c;
    }
  }
}

/** RoPE on interleaved pairs: x [B, T, ..., dr] (axis 1 = position), cos/sin [T, dr/2]. */
export function ropeInterleaved(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  checkF32('ropeInterleaved', x, 'x');
  checkF32('ropeInterleaved', cos, 'cos');
  checkF32('ropeInterleaved', sin, 'sin');
  if (x.ndim < 3) throw new Error(`ropeInterleaved: x must be [B, T, ..., dr], got ${fmtShape(x.shape)}`);
  const T = x.shape[1]!;
  const dr = x.shape[x.ndim - 1]!;
  if (dr % 2 !== 0) throw new Error(`ropeInterleaved: the rotary dim ${dr} of x ${fmtShape(x.shape)} must be even`);
  const want = [T, dr / 2];
  for (const [name, t] of [['cos', cos], ['sin', sin]] as const) {
    if (t.ndim !== 2 || t.shape[0] !== T || t.shape[1] !== dr / 2) {
      throw new Error(`ropeInterleaved: ${name} ${fmtShape(t.shape)} must be ${fmtShape(want)} for x ${fmtShape(x.shape)}`);
    }
  }
  const cd = dataOf(cos);
  const sd = dataOf(sin);
  const rows = dr === 0 ? 0 : x.size / dr;
  const mid = shapeSize(x.shape.slice(2, x.ndim - 1));
  const y = allocUninit(x.size); // every element is written
  if (rows > 0) {
    // strided rows (e.g. the rope slice of a projection) are read in place; else the kernel
    if (!x.isContiguous() && x.strides[x.ndim - 1] === 1) rotate(x.data as Float32Array, rowStarts(x), y, rows, dr, mid, T, cd, sd);
    else kernels().ropeRows(dataOf(x), y, rows, dr, 0, dr, mid, T, cd, sd, false);
  }
  const out = new Tensor(y, x.shape, 'f32');
  if (!x.requiresGrad) return out;
  const shape = x.shape;
  const n = y.length; // the closure reads no forward buffer (y may be released before it runs)
  return attach(out, 'ropeInterleaved', [x], (g) => {
    const dx = allocUninit(n);
    if (rows > 0) kernels().ropeRows(dataOf(g), dx, rows, dr, 0, dr, mid, T, cd, sd, true);
    return [new Tensor(dx, shape, 'f32')];
  }, [cd, sd]); // the tables only: x is not read again
}

/**
 * x [B, T, ..., d] with RoPE applied to its last `dr` channels (the rest copied), as one
 * contiguous tensor: MLA's per-head query [q^C ; q^R] with q^R rotated (DeepSeek-V3 Eqs. 8-9)
 * in one pass, instead of slicing, rotating and concatenating. cos/sin [T, dr/2].
 */
export function ropeTail(x: Tensor, cos: Tensor, sin: Tensor, dr: number): Tensor {
  checkF32('ropeTail', x, 'x');
  if (x.ndim < 3) throw new Error(`ropeTail: x must be [B, T, ..., d], got ${fmtShape(x.shape)}`);
  const T = x.shape[1]!;
  const d = x.shape[x.ndim - 1]!;
  if (!Number.isInteger(dr) || dr < 0 || dr % 2 !== 0 || dr > d) {
    throw new Error(`ropeTail: the rotary dim ${dr} must be even and at most the last dim of x ${fmtShape(x.shape)}`);
  }
  for (const [name, t] of [['cos', cos], ['sin', sin]] as const) {
    checkF32('ropeTail', t, name);
    if (t.ndim !== 2 || t.shape[0] !== T || t.shape[1] !== dr / 2) {
      throw new Error(`ropeTail: ${name} ${fmtShape(t.shape)} must be [${T}, ${dr / 2}] for x ${fmtShape(x.shape)}`);
    }
  }
  const cd = dataOf(cos);
  const sd = dataOf(sin);
  const xd = dataOf(x);
  const rows = d === 0 ? 0 : xd.length / d;
  const mid = shapeSize(x.shape.slice(2, x.ndim - 1));
  const y = allocUninit(xd.length);
  if (rows > 0) kernels().ropeRows(xd, y, rows, d, d - dr, dr, mid, T, cd, sd, false);
  const out = new Tensor(y, x.shape, 'f32');
  if (!x.requiresGrad) return out;
  const shape = x.shape;
  const n = y.length; // the closure reads no forward buffer (y may be released before it runs)
  return attach(out, 'ropeTail', [x], (g) => {
    const dx = allocUninit(n);
    if (rows > 0) kernels().ropeRows(dataOf(g), dx, rows, d, d - dr, dr, mid, T, cd, sd, true);
    return [new Tensor(dx, shape, 'f32')];
  }, [cd, sd]); // the tables only: x is not read again
}
