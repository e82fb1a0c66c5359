/** Reference elementwise kernels (contiguous buffers). */
import { BinaryOp } from '../kernels.js';

export function binary(op: BinaryOp, a: Float32Array, b: Float32Array, out: Float32Array, n: number): void {
  switch (op) {
    case BinaryOp.Add:
      for (let i = 0; i < n; i++) out[i] = a[i]! + b[i]!;
      break;
    case BinaryOp.Sub:
      for (let i = 0; i < n; i++) out[i] = a[i]! - b[i]!;
      break;
    case BinaryOp.Mul:
      for (let i = 0; i < n; i++) out[i] = a[i]! * b[i]!;
      break;
    case BinaryOp.Div:
      for (let i = 0; i < n; i++) out[i] = a[i]! / b[i]!;
      break;
    default:
      throw new RangeError(`binary: unknown op ${op as number}`);
  }
}

export function axpy(alpha: number, x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) y[i]! += alpha * x[i]!;
}
