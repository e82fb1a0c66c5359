/**
 * Reference FP8-weight linear (Kernels.linearFp8, the FP8 checkpoint weights of inference; native:
 * native/src/isa/fp8_weight_*.c): y = x W^T with W decoded one 128-row block-row at a time into a
 * small scratch buffer (float32(e4m3(code) * scale_inv[block])), then a reference GEMM. Memory
 * stays at one byte per weight plus a 128 x k scratch.
 */
import { E4M3_TABLE } from '../fp8/codec.js';
import { gemm } from './gemm.js';

export function linearFp8(m: number, n: number, k: number, x: Float32Array, codes: Uint8Array, scaleInv: Float32Array,
  beta: number, y: Float32Array): void {
  const kb = Math.ceil(k / 128);
  if (codes.length < n * k) throw new RangeError(`linearFp8: codes has ${codes.length} elements, needs ${n * k}`);
  if (scaleInv.length < Math.ceil(n / 128) * kb) throw new RangeError(`linearFp8: scaleInv has ${scaleInv.length} elements, needs ${Math.ceil(n / 128) * kb}`);
  const rowsPer = 128;
  const scratch = new Float32Array(Math.min(rowsPer, n) * k);
  const part = new Float32Array(m * rowsPer);
  for (let r0 = 0; r0 < n; r0 += rowsPer) {
    const rows = Math.min(rowsPer, n - r0);
    const br = r0 / 128;
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < k; j++) {
        scratch[i * k + j] = Math.fround(E4M3_TABLE[codes[(r0 + i) * k + j]!]! * scaleInv[br * kb + ((j / 128) | 0)]!);
      }
    }
    gemm(false, true, m, rows, k, 1, x, k, scratch, k, 0, part, rows);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < rows; j++) {
        const o = i * n + r0 + j;
        y[o] = beta === 0 ? part[i * rows + j]! : beta * y[o]! + part[i * rows + j]!;
      }
    }
  }
}

/**
 * Reference for Kernels.linearFp8T: y[m,n] = x[m,k] · W, W [k,n] = float32(e4m3(codes[p,c]) *
 * scaleInv[p/128, c/128]), each output summed over p = 0 .. k-1 in order in float32 (one
 * rounding per product and per sum, as the native kernel's FMAs up to the fused rounding).
 */
export function linearFp8T(m: number, n: number, k: number, x: Float32Array, codes: Uint8Array, scaleInv: Float32Array,
  y: Float32Array): void {
  const nb = Math.ceil(n / 128);
  if (codes.length < n * k) throw new RangeError(`linearFp8T: codes has ${codes.length} elements, needs ${n * k}`);
  if (scaleInv.length < Math.ceil(k / 128) * nb) throw new RangeError(`linearFp8T: scaleInv has ${scaleInv.length} elements, needs ${Math.ceil(k / 128) * nb}`);
  const w = new Float32Array(n);
  const acc = new Float32Array(n);
  for (let i = 0; i < m; i++) {
    acc.fill(0);
    for (let p = 0; p < k; p++) {
      const srow = ((p / 128) | 0) * nb;
      for (let c = 0; c < n; c++) w[c] = E4M3_TABLE[codes[p * n + c]!]! * scaleInv[srow + ((c / 128) | 0)]!;
      const xv = x[i * k + p]!;
      for (let c = 0; c < n; c++) acc[c] = acc[c]! + Math.fround(xv * w[c]!);
    }
    y.set(acc, i * n);
  }
}
