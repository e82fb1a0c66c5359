/** Reference optimizer kernels: the AdamW update (float64 arithmetic, as src/train/optimizer.ts
 * evaluates it) and the float64 sum of squares of a gradient. */
import { bf16ToF32, f32ToBf16 } from '../dtype.js';

/** Kernels.adamwBf16: `adamw` on bfloat16 moments (m, v bit patterns). */
export function adamwBf16(w: Float32Array, g: Float32Array, m: Uint16Array, v: Uint16Array, n: number, gradScale: number, decay: number,
  b1: number, b2: number, c1: number, c2: number, lr: number, bc1: number, bc2: number, eps: number): void {
  const stepSize = lr / bc1;
  const invBc2 = 1 / bc2;
  for (let j = 0; j < n; j++) {
    const gj = g[j]! * gradScale;
    const mj = b1 * bf16ToF32(m[j]!) + c1 * gj;
    const vj = b2 * bf16ToF32(v[j]!) + c2 * gj * gj;
    m[j] = f32ToBf16(mj);
    v[j] = f32ToBf16(vj);
    w[j] = w[j]! * decay - (stepSize * mj) / (Math.sqrt(vj * invBc2) + eps);
  }
}

export function adamw(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, n: number, gradScale: number, decay: number,
  b1: number, b2: number, c1: number, c2: number, lr: number, bc1: number, bc2: number, eps: number): void {
  const stepSize = lr / bc1;
  const invBc2 = 1 / bc2;
  for (let j = 0; j < n; j++) {
    const gj = g[j]! * gradScale;
    const mj = b1 * m[j]! + c1 * gj;
    const vj = b2 * v[j]! + c2 * gj * gj;
    m[j] = mj;
    v[j] = vj;
    w[j] = w[j]! * decay - (stepSize * mj) / (Math.sqrt(vj * invBc2) + eps);
  }
}

export function sumSquares(x: Float32Array, n: number): number {
  let s = 0;
  for (let j = 0; j < n; j++) s += x[j]! * x[j]!;
  return s;
}
