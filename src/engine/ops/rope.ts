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
import { Tensor } from '../tensor.js';
import { alloc, checkF32, dataOf, fmtShape, rowStarts, shapeSize } from './util.js';

/**
 * Rotates rows of src (row r starting at starts[r] in src, or r*dr when starts is null) into
 * dst (contiguous); sign = +1 forward, -1 backward.
 */
function rotate(src: Float32Array, starts: Int32Array | Float64Array | null, dst: Float32Array, rows: number, dr: number,
  mid: number, T: number, cos: Float32Array, sin: Float32Array, sign: number): void {
  const half = dr >> 1;
  for (let r = 0; r < rows; r++) {
    const t = Math.floor(r / mid) % T;
    const so = starts ? starts[r]! : r * dr;
    const o = r * dr;
    const co = t * half;
    for (let i = 0; i < half; i++) {
      const c = cos[co + i]!;
      const s = sign * sin[co + i]!;
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
  const y = alloc(x.size);
  if (rows > 0) {
    if (x.strides[x.ndim - 1] === 1) rotate(x.data as Float32Array, rowStarts(x), y, rows, dr, mid, T, cd, sd, 1);
    else rotate(dataOf(x), null, y, rows, dr, mid, T, cd, sd, 1);
  }
  const out = new Tensor(y, x.shape, 'f32');
  if (!x.requiresGrad) return out;
  const shape = x.shape;
  return attach(out, 'ropeInterleaved', [x], (g) => {
    const dx = alloc(y.length);
    if (rows > 0) rotate(dataOf(g), null, dx, rows, dr, mid, T, cd, sd, -1);
    return [new Tensor(dx, shape, 'f32')];
  });
}
