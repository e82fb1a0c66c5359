/**
 * float32 → the ggml tensor encodings of a GGUF file, bit for bit as llama.cpp makes them:
 *
 *   - F32:  as is;
 *   - BF16: round to nearest even (NaN kept quiet), gguf-py's `__compute_fp32_to_bf16`;
 *   - F16:  IEEE binary16, round to nearest even (ggml's GGML_FP32_TO_FP16 / F16C), with
 *           subnormals, overflow to ±inf;
 *   - Q8_0: blocks of 32 along ne[0]: d = amax / 127 (float32), id = d ? 1/d : 0, the block
 *           stores fp16(d) then 32 int8 roundf(x * id) (half away from zero) —
 *           ggml-quants.c `quantize_row_q8_0_ref`, which gguf-py's Q8_0 reproduces exactly.
 */
import { f32ToBf16 } from '../engine/dtype.js';
import { DsvError } from '../errors.js';
import { GGML_BLOCK, type GgmlTypeName } from './gguf-format.js';

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** float32 → IEEE half bits, round to nearest even. */
export function f32ToF16(x: number): number {
  f32buf[0] = x;
  const b = u32buf[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // a carry moves into the exponent (up to inf), as it should
  return sign | h;
}

/** IEEE half bits → float32 value. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** C roundf: round half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/** Quantises `src` (length a multiple of 32) into Q8_0 blocks written to `dst` at byte `at`. */
export function quantizeQ8_0(src: Float32Array, dst: Uint8Array, at = 0): void {
  if (src.length % 32 !== 0) throw new DsvError(`Q8_0: ${src.length} values are not a whole number of 32-value blocks`);
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  const nb = src.length / 32;
  for (let i = 0; i < nb; i++) {
    const base = i * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(src[base + j]!);
      if (a > amax) amax = a;
    }
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const o = at + i * 34;
    view.setUint16(o, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) view.setInt8(o + 2 + j, roundf(Math.fround(src[base + j]! * id)));
  }
}

/** Bytes that `n` float32 values take in `type` (n a multiple of the block size). */
export function encodedBytes(type: GgmlTypeName, n: number): number {
  const b = GGML_BLOCK[type];
  return (n / b.elems) * b.bytes;
}

/** Encodes float32 values as `type`; for Q8_0 the values are whole rows (blocks along ne[0]). */
export function encodeAs(type: GgmlTypeName, src: Float32Array): Uint8Array {
  const out = new Uint8Array(encodedBytes(type, src.length));
  switch (type) {
    case 'F32':
      out.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
      break;
    case 'BF16': {
      const v = new DataView(out.buffer);
      for (let i = 0; i < src.length; i++) v.setUint16(2 * i, f32ToBf16(src[i]!), true);
      break;
    }
    case 'F16': {
      const v = new DataView(out.buffer);
      for (let i = 0; i < src.length; i++) v.setUint16(2 * i, f32ToF16(src[i]!), true);
      break;
    }
    case 'Q8_0':
      quantizeQ8_0(src, out);
      break;
  }
  return out;
}
