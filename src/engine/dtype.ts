/**
 * Element types. Compute is float32; bf16 and the two FP8 formats are storage types with exact
 * conversions (bf16 <-> f32 here, E4M3/E5M2 in fp8/codec.ts).
 */
export type DType = 'f32' | 'bf16' | 'f8_e4m3' | 'f8_e5m2' | 'i32' | 'u8';

/** The typed array that stores each dtype (bf16 as raw bits, FP8 as raw codes). */
export interface StorageOf {
  f32: Float32Array;
  bf16: Uint16Array;
  f8_e4m3: Uint8Array;
  f8_e5m2: Uint8Array;
  i32: Int32Array;
  u8: Uint8Array;
}
export type Storage = StorageOf[DType];

export function bytesPerElement(dtype: DType): number {
  switch (dtype) {
    case 'f32':
    case 'i32':
      return 4;
    case 'bf16':
      return 2;
    case 'f8_e4m3':
    case 'f8_e5m2':
    case 'u8':
      return 1;
  }
}

/** Allocates zeroed storage for n elements of dtype. */
export function allocStorage(dtype: DType, n: number): Storage {
  switch (dtype) {
    case 'f32':
      return new Float32Array(n);
    case 'i32':
      return new Int32Array(n);
    case 'bf16':
      return new Uint16Array(n);
    case 'f8_e4m3':
    case 'f8_e5m2':
    case 'u8':
      return new Uint8Array(n);
  }
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** bfloat16 bits -> float32 (exact). */
export function bf16ToF32(bits: number): number {
  u32buf[0] = (bits & 0xffff) << 16;
  return f32buf[0]!;
}

/** float32 -> bfloat16 bits, round to nearest even; NaN stays NaN (quiet). */
export function f32ToBf16(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0]!;
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  const rounded = u + 0x7fff + ((u >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** Converts a whole bf16 array to float32. */
export function bf16ArrayToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const d32 = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) d32[i] = src[i]! << 16;
  return dst;
}

/** Converts a whole float32 array to bf16 bits (round to nearest even). */
export function f32ArrayToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = f32ToBf16(src[i]!);
  return dst;
}
