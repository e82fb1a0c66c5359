/**
 * The FP8 number formats (E4M3FN and E5M2) and the block scale rule, shared by both FP8 roles:
 * FP8 checkpoint weights for inference (checkpoint-weights.ts) and the FP8 training recipe
 * (quant.ts; paper §3.3).
 *
 * E4M3FN: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; NaN = S.1111.111
 * (0x7F / 0xFF); max finite 448; subnormals m * 2^-9.
 * E5M2: 1 sign, 5 exponent (bias 15), 2 mantissa bits; IEEE-like (inf 0x7C, NaN 0x7D-0x7F);
 * max finite 57344; subnormals m * 2^-16.
 *
 * Encoders take a float32 (any JS number is first rounded to float32), round to nearest with
 * ties to even, saturate to +-max (infinities included), map NaN to 0x7F and keep the sign of
 * zero and of values that round to zero. They work on the float32 bit pattern with integer
 * arithmetic: no table, no allocation.
 *
 * Block rule (fixtures README, `e4m3/`), all in float32 arithmetic:
 * `amax = max(max|x| over the group, 1e-4)`, `s = fround(amax / 448)` (ue8m0: the smallest power
 * of two >= s), `code = e4m3(fround(x / s))`, dequantised value `fround(e4m3(code) * s)`.
 */

/** Largest finite E4M3FN value. */
export const E4M3_MAX = 448;
/** Quantisation group length (tiles 1x128, blocks 128x128). */
export const FP8_BLOCK = 128;
/** Floor applied to a group's amax before computing its scale. */
export const FP8_AMAX_FLOOR = 1e-4;

function buildE4M3Table(): Float32Array {
  const t = new Float32Array(256);
  for (let c = 0; c < 256; c++) {
    const sign = c & 0x80 ? -1 : 1;
    const e = (c >> 3) & 0xf;
    const m = c & 7;
    if (e === 15 && m === 7) t[c] = NaN;
    else if (e === 0) t[c] = sign * m * 2 ** -9;
    else t[c] = sign * (1 + m / 8) * 2 ** (e - 7);
  }
  return t;
}

function buildE5M2Table(): Float32Array {
  const t = new Float32Array(256);
  for (let c = 0; c < 256; c++) {
    const sign = c & 0x80 ? -1 : 1;
    const e = (c >> 2) & 0x1f;
    const m = c & 3;
    if (e === 31) t[c] = m === 0 ? sign * Infinity : NaN;
    else if (e === 0) t[c] = sign * m * 2 ** -16;
    else t[c] = sign * (1 + m / 4) * 2 ** (e - 15);
  }
  return t;
}

/** Decoded value of every E4M3FN code (NaN at 0x7F and 0xFF). */
export const E4M3_TABLE: Float32Array = buildE4M3Table();
/** Decoded value of every E5M2 code (+-inf at 0x7C/0xFC, NaN at 0x7D-0x7F, 0xFD-0xFF). */
export const E5M2_TABLE: Float32Array = buildE5M2Table();

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** E4M3FN code of a float32 bit pattern (the core of every E4M3 encoder here). */
export function e4m3FromBits(u: number): number {
  const sign = (u >>> 24) & 0x80;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return 0x7f; // NaN
  if (a >= 0x43e00000) return sign | 0x7e; // >= 448 (and inf): saturate
  const e = a >>> 23;
  if (e >= 121) {
    // normal E4M3 range (>= 2^-6): keep 3 of 23 mantissa bits, round half to even, rebias 127 -> 7
    return sign | (((a + 0x7ffff + ((a >>> 20) & 1)) >>> 20) - 960);
  }
  if (e < 117) return sign; // below 2^-10: rounds to zero
  // subnormal: code = round(|x| / 2^-9) = round(m * 2^(e - 141)); 8 becomes the min normal 0x08
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 141 - e;
  const half = 1 << (shift - 1);
  return sign | ((m + half - 1 + ((m >>> shift) & 1)) >>> shift);
}

/** E5M2 code of a float32 bit pattern (saturating: +-inf and |x| >= 57344 give +-57344). */
export function e5m2FromBits(u: number): number {
  const sign = (u >>> 24) & 0x80;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return 0x7f;
  if (a >= 0x47600000) return sign | 0x7b;
  const e = a >>> 23;
  if (e >= 113) {
    // normal E5M2 range (>= 2^-14): keep 2 mantissa bits, rebias 127 -> 15
    return sign | (((a + 0xfffff + ((a >>> 21) & 1)) >>> 21) - 448);
  }
  if (e < 109) return sign; // below 2^-17: rounds to zero
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 134 - e;
  const half = 1 << (shift - 1);
  return sign | ((m + half - 1 + ((m >>> shift) & 1)) >>> shift);
}

/** Encodes one value (rounded to float32 first) as an E4M3FN code. */
export function encodeE4M3(x: number): number {
  scratchF32[0] = x;
  return e4m3FromBits(scratchU32[0]!);
}

/** Encodes one value (rounded to float32 first) as an E5M2 code. */
export function encodeE5M2(x: number): number {
  scratchF32[0] = x;
  return e5m2FromBits(scratchU32[0]!);
}

/** Decodes one E4M3FN code. */
export function decodeE4M3(code: number): number {
  return E4M3_TABLE[code & 0xff]!;
}

/** Encodes a float32 array to E4M3FN codes (into `dst` when given). */
export function encodeE4M3Array(src: Float32Array, dst: Uint8Array = new Uint8Array(src.length)): Uint8Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) dst[i] = e4m3FromBits(bits[i]!);
  return dst;
}

/** The block scale for a group amax: fround(max(amax, 1e-4) / 448), or its ue8m0 power of two. */
export function fp8Scale(amax: number, ue8m0 = false): number {
  const s = Math.fround(Math.max(amax, FP8_AMAX_FLOOR) / E4M3_MAX);
  return ue8m0 ? ceilPow2(s) : s;
}

/** Smallest power of two >= s for a positive normal float32 s (exact, via the bits). */
function ceilPow2(s: number): number {
  scratchF32[0] = s;
  const u = scratchU32[0]!;
  if ((u & 0x7fffff) === 0) return s;
  scratchU32[0] = ((u >>> 23) + 1) << 23;
  return scratchF32[0]!;
}
