/** Reference optimizer kernels: the AdamW update (float64 arithmetic, as src/train/optimizer.ts
 * evaluates it) and the float64 sum of squares of a gradient. */
import { bf16ToF32, f32ToBf16 } from '../dtype.js';
import { bf16Round } from './bf16.js';

/** wb (optional): the bf16 bits of the updated w, as bf16Round writes them (checked before any update). */
function checkWb(n: number, wb: Uint16Array | undefined): void {
  if (wb && wb.length < n) throw new RangeError(`adamw: wb has ${wb.length} elements, the call needs ${n}`);
}
function roundInto(w: Float32Array, n: number, wb: Uint16Array | undefined): void {
  if (wb) bf16Round(w, wb, n);
}

/** Kernels.adamwBf16: `adamw` on bfloat16 moments (m, v bit patterns). */
export function adamwBf16(w: Float32Array, g: Float32Array, m: Uint16Array, v: Uint16Array, n: number, gradScale: number, decay: number,
  b1: number, b2: number, c1: number, c2: number, lr: number, bc1: number, bc2: number, eps: number, wb?: Uint16Array): void {
  checkWb(n, wb);
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
  roundInto(w, n, wb);
}

export function adamw(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, n: number, gradScale: number, decay: number,
  b1: number, b2: number, c1: number, c2: number, lr: number, bc1: number, bc2: number, eps: number, wb?: Uint16Array): void {
  checkWb(n, wb);
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
  roundInto(w, n, wb);
}

export function sumSquares(x: Float32Array, n: number): number {
  let s = 0;
  for (let j = 0; j < n; j++) s += x[j]! * x[j]!;
  return s;
}
