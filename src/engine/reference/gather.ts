/** Reference row gather / scatter kernels (the MoE dispatch and combine). Plain loops; the
 * scatter's multiply-add is computed in float64 and rounded once, like a fused multiply-add. */

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

export function scaleRows(x: Float32Array, s: Float32Array, y: Float32Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    const f = s[i]!;
    for (let j = 0; j < cols; j++) y[o + j] = f * x[o + j]!;
  }
}
