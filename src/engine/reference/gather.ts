/** Reference row kernels: gather / scatter (the MoE dispatch and combine), strided copies and
 * RoPE on a channel range (MLA). Plain loops; the scatter's multiply-add and the rotations are
 * computed in float64 and rounded once. */
import { f32ToBf16 } from '../dtype.js';

export function gatherRows(src: Float32Array, idx: Int32Array, scale: Float32Array | null, dst: Float32Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) {
    const s = idx[i]! * cols;
    const o = i * cols;
    if (scale) {
      const f = scale[i]!;
      for (let j = 0; j < cols; j++) dst[o + j] = f * src[s + j]!;
    } else {
      for (let j = 0; j < cols; j++) dst[o + j] = src[s + j]!;
    }
  }
}

export function scatterAddRows(src: Float32Array, idx: Int32Array, scale: Float32Array | null, dst: Float32Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) {
    const d = idx[i]! * cols;
    const o = i * cols;
    const f = scale ? scale[i]! : 1;
    for (let j = 0; j < cols; j++) dst[d + j] = dst[d + j]! + f * src[o + j]!;
  }
}

export function rowDot(a: Float32Array, b: Float32Array, out: Float32Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    let s = 0;
    for (let j = 0; j < cols; j++) s += a[o + j]! * b[o + j]!;
    out[i] = s;
  }
}

export function scaleRows(x: Float32Array, s: Float32Array, y: Float32Array, rows: number, cols: number, y16?: Uint16Array): void {
  if (y16 && y16.length < rows * cols) throw new RangeError(`scaleRows: y16 has ${y16.length} elements, the call needs ${rows * cols}`);
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    const f = s[i]!;
    for (let j = 0; j < cols; j++) y[o + j] = f * x[o + j]!;
  }
  if (y16) for (let i = 0; i < rows * cols; i++) y16[i] = f32ToBf16(y[i]!); // bf16Round of y
}

export function copyStrided(src: Float32Array, dst: Float32Array, n0: number, n1: number, cols: number,
  ss0: number, ss1: number, ds0: number, ds1: number, accumulate: boolean): void {
  for (let i = 0; i < n0; i++) {
    for (let j = 0; j < n1; j++) {
      const s = i * ss0 + j * ss1;
      const d = i * ds0 + j * ds1;
      if (accumulate) for (let c = 0; c < cols; c++) dst[d + c] = dst[d + c]! + src[s + c]!;
      else for (let c = 0; c < cols; c++) dst[d + c] = src[s + c]!;
    }
  }
}

export function ropeRows(x: Float32Array, y: Float32Array, rows: number, cols: number, start: number, dr: number, mid: number, T: number,
  cos: Float32Array, sin: Float32Array, inverse: boolean): void {
  const half = dr >> 1;
  const sign = inverse ? -1 : 1;
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    if (x !== y) {
      for (let j = 0; j < start; j++) y[o + j] = x[o + j]!;
      for (let j = start + dr; j < cols; j++) y[o + j] = x[o + j]!;
    }
    const co = (Math.floor(r / mid) % T) * half;
    const ro = o + start;
    for (let i = 0; i < half; i++) {
      const c = cos[co + i]!;
      const s = sign * sin[co + i]!;
      const a = x[ro + 2 * i]!;
      const b = x[ro + 2 * i + 1]!;
      y[ro + 2 * i] = a * c - b * s;
      y[ro + 2 * i + 1] = a * s + b * c;
    }
  }
}
