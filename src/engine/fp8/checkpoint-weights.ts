/**
 * FP8 checkpoint weights, the inference role of FP8: a linear weight [rows, cols] stored as
 * E4M3FN codes plus one float32 `weight_scale_inv` per 128x128 block, as the released
 * DeepSeek-V3 checkpoints hold them (paper §3.3.2): W[i, j] = float32(e4m3(code[i, j]) *
 * scale_inv[i/128, j/128]). `dequantFp8Weight` is what loading an FP8 checkpoint into float32
 * parameters uses; `quantizeBlocks128` makes such weights (synthetic FP8 models, benchmarks)
 * with the block rule of codec.ts. The FP8-weight GEMV/GEMM itself is the kernel
 * `Kernels.linearFp8` (native/src/isa/fp8_weight_*.c, reference/fp8-weight.ts).
 */
import { DsvError } from '../../errors.js';
import { E4M3_TABLE, FP8_BLOCK, e4m3FromBits, fp8Scale } from './codec.js';

/** Per-128x128-block weights: codes [rows, cols] and scale_inv [ceil(rows/128), ceil(cols/128)]. */
export interface BlockQuant {
  codes: Uint8Array;
  scaleInv: Float32Array;
}

// Reused between calls: one 128-element row segment, scaled, read back as float32 bits.
const segF32 = new Float32Array(FP8_BLOCK);
const segU32 = new Uint32Array(segF32.buffer);

/** Encodes x[off .. off+n) divided by s into codes[off ..) (float32 division, then E4M3). */
function encodeScaled(x: Float32Array, off: number, n: number, s: number, codes: Uint8Array): void {
  for (let j = 0; j < n; j++) segF32[j] = x[off + j]! / s;
  for (let j = 0; j < n; j++) codes[off + j] = e4m3FromBits(segU32[j]!);
}

/** Quantises a weight [rows, cols] per 128x128 block (edge blocks partial). */
export function quantizeBlocks128(w: Float32Array, rows: number, cols: number, ue8m0 = false): BlockQuant {
  if (w.length !== rows * cols) {
    throw new DsvError(`quantizeBlocks128 input: length ${w.length} does not match the shape (expected ${rows * cols})`);
  }
  const nbr = Math.ceil(rows / FP8_BLOCK);
  const nbc = Math.ceil(cols / FP8_BLOCK);
  const codes = new Uint8Array(rows * cols);
  const scaleInv = new Float32Array(nbr * nbc);
  for (let br = 0; br < nbr; br++) {
    const r0 = br * FP8_BLOCK;
    const r1 = Math.min(rows, r0 + FP8_BLOCK);
    for (let bc = 0; bc < nbc; bc++) {
      const c0 = bc * FP8_BLOCK;
      const n = Math.min(FP8_BLOCK, cols - c0);
      let amax = 0;
      for (let r = r0; r < r1; r++) {
        const off = r * cols + c0;
        for (let j = 0; j < n; j++) {
          const v = Math.abs(w[off + j]!);
          if (v > amax) amax = v;
        }
      }
      const s = fp8Scale(amax, ue8m0);
      scaleInv[br * nbc + bc] = s;
      for (let r = r0; r < r1; r++) encodeScaled(w, r * cols + c0, n, s, codes);
    }
  }
  return { codes, scaleInv };
}

/**
 * Dense float32 value of an FP8 (E4M3FN) weight [rows, cols] with its block scale_inv
 * [ceil(rows/128), ceil(cols/128)]: W[i, j] = float32(e4m3(code[i, j]) * scale_inv[i/128, j/128]).
 * `name` (the tensor name) is used in error messages.
 */
export function dequantFp8Weight(
  codes: Uint8Array,
  scaleInv: Float32Array,
  rows: number,
  cols: number,
  name = 'FP8 weight',
): Float32Array {
  const nbr = Math.ceil(rows / FP8_BLOCK);
  const nbc = Math.ceil(cols / FP8_BLOCK);
  if (codes.length !== rows * cols) {
    throw new DsvError(`${name}: ${codes.length} FP8 codes do not match the shape [${rows}, ${cols}]`);
  }
  if (scaleInv.length !== nbr * nbc) {
    throw new DsvError(
      `${name}: weight_scale_inv has ${scaleInv.length} values, expected [${nbr}, ${nbc}] = ${nbr * nbc} for a [${rows}, ${cols}] weight in 128x128 blocks`,
    );
  }
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const sRow = ((r / FP8_BLOCK) | 0) * nbc;
    const off = r * cols;
    for (let c = 0; c < cols; c++) {
      out[off + c] = E4M3_TABLE[codes[off + c]!]! * scaleInv[sRow + ((c / FP8_BLOCK) | 0)]!;
    }
  }
  return out;
}
