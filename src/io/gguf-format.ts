/**
 * The GGUF file format, version 3 (ggml's gguf.h / docs/gguf.md in llama.cpp), as written by
 * `dsv3 export gguf`:
 *
 *   magic "GGUF" · u32 version (3) · u64 tensor count · u64 KV count
 *   KV pairs:     string key · u32 value type · value (arrays: u32 element type, u64 count, items)
 *   tensor infos: string name · u32 n_dims · u64 ne[n_dims] (ne[0] innermost, i.e. the
 *                 reverse of the PyTorch shape) · u32 ggml type · u64 offset into the data area
 *   padding to `general.alignment` (default 32), then the data area; every tensor's data
 *   starts at a multiple of the alignment (zero padding between tensors).
 *
 * Strings are u64 byte length + UTF-8 bytes (no terminator); everything is little-endian.
 */
import { DsvError } from '../errors.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** gguf_type: the type tag of a KV value. */
export const GgufType = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7,
  STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;
export type GgufTypeId = (typeof GgufType)[keyof typeof GgufType];

/** The ggml tensor types dsv3 writes (ggml.h enum ggml_type). */
export const GgmlType = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
export type GgmlTypeName = keyof typeof GgmlType;

/** Elements per block and bytes per block of each type (Q8_0: fp16 scale + 32 int8). */
export const GGML_BLOCK: Readonly<Record<GgmlTypeName, { elems: number; bytes: number }>> = {
  F32: { elems: 1, bytes: 4 },
  F16: { elems: 1, bytes: 2 },
  BF16: { elems: 1, bytes: 2 },
  Q8_0: { elems: 32, bytes: 34 },
};

/** A scalar KV value with its GGUF type. */
export type GgufScalar =
  | { type: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64'; value: number }
  | { type: 'u64' | 'i64'; value: bigint | number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string };

/** A KV value: a scalar, or an array of scalars of one type. */
export type GgufValue =
  | GgufScalar
  | { type: 'array'; itemType: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64'; value: readonly number[] | ArrayLike<number> }
  | { type: 'array'; itemType: 'string'; value: readonly string[] }
  | { type: 'array'; itemType: 'bool'; value: readonly boolean[] };

export const SCALAR_TYPE: Readonly<Record<string, GgufTypeId>> = {
  u8: GgufType.UINT8, i8: GgufType.INT8, u16: GgufType.UINT16, i16: GgufType.INT16,
  u32: GgufType.UINT32, i32: GgufType.INT32, f32: GgufType.FLOAT32, bool: GgufType.BOOL,
  string: GgufType.STRING, u64: GgufType.UINT64, i64: GgufType.INT64, f64: GgufType.FLOAT64,
};

/** Shorthands for KV values. */
export const kv = {
  u32: (value: number): GgufValue => ({ type: 'u32', value }),
  i32: (value: number): GgufValue => ({ type: 'i32', value }),
  f32: (value: number): GgufValue => ({ type: 'f32', value }),
  bool: (value: boolean): GgufValue => ({ type: 'bool', value }),
  str: (value: string): GgufValue => ({ type: 'string', value }),
  strs: (value: readonly string[]): GgufValue => ({ type: 'array', itemType: 'string', value }),
  i32s: (value: ArrayLike<number>): GgufValue => ({ type: 'array', itemType: 'i32', value }),
};

/** One tensor's entry in the tensor-info section. */
export interface GgufTensorInfo {
  name: string;
  /** ggml order: ne[0] is the innermost (contiguous) dimension. */
  ne: readonly number[];
  type: GgmlTypeName;
}

/** Bytes of a tensor's data (ne[0] must be a multiple of the type's block size). */
export function ggmlTensorBytes(t: GgufTensorInfo): number {
  const b = GGML_BLOCK[t.type];
  const ne0 = t.ne[0] ?? 1;
  if (ne0 % b.elems !== 0) throw new DsvError(`${t.name}: ne[0] = ${ne0} is not a multiple of ${b.elems}, the ${t.type} block size`);
  let rows = 1;
  for (let i = 1; i < t.ne.length; i++) rows *= t.ne[i]!;
  return (ne0 / b.elems) * b.bytes * rows;
}

export const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Little-endian byte builder for the metadata sections. */
class Bytes {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(x: number): void { this.reserve(1); this.view.setUint8(this.length, x); this.length += 1; }
  i8(x: number): void { this.reserve(1); this.view.setInt8(this.length, x); this.length += 1; }
  u16(x: number): void { this.reserve(2); this.view.setUint16(this.length, x, true); this.length += 2; }
  i16(x: number): void { this.reserve(2); this.view.setInt16(this.length, x, true); this.length += 2; }
  u32(x: number): void { this.reserve(4); this.view.setUint32(this.length, x, true); this.length += 4; }
  i32(x: number): void { this.reserve(4); this.view.setInt32(this.length, x, true); this.length += 4; }
  f32(x: number): void { this.reserve(4); this.view.setFloat32(this.length, x, true); this.length += 4; }
  f64(x: number): void { this.reserve(8); this.view.setFloat64(this.length, x, true); this.length += 8; }
  u64(x: bigint | number): void { this.reserve(8); this.view.setBigUint64(this.length, BigInt(x), true); this.length += 8; }
  i64(x: bigint | number): void { this.reserve(8); this.view.setBigInt64(this.length, BigInt(x), true); this.length += 8; }
  bytes(b: Uint8Array): void { this.reserve(b.length); this.buf.set(b, this.length); this.length += b.length; }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  zeros(n: number): void { this.reserve(n); this.buf.fill(0, this.length, this.length + n); this.length += n; }
  result(): Uint8Array { return this.buf.slice(0, this.length); }
}

function checkNumber(key: string, type: string, x: number): void {
  const ranges: Record<string, [number, number]> = {
    u8: [0, 255], i8: [-128, 127], u16: [0, 65535], i16: [-32768, 32767], u32: [0, 2 ** 32 - 1], i32: [-(2 ** 31), 2 ** 31 - 1],
  };
  const r = ranges[type];
  if (r && (!Number.isInteger(x) || x < r[0] || x > r[1])) throw new DsvError(`GGUF key ${key}: ${x} is not a valid ${type}`);
  if ((type === 'f32' || type === 'f64') && typeof x !== 'number') throw new DsvError(`GGUF key ${key}: ${String(x)} is not a number`);
}

function writeScalar(b: Bytes, key: string, type: string, x: unknown): void {
  switch (type) {
    case 'string': b.str(x as string); return;
    case 'bool': b.u8(x ? 1 : 0); return;
    case 'u64': b.u64(x as bigint | number); return;
    case 'i64': b.i64(x as bigint | number); return;
  }
  checkNumber(key, type, x as number);
  (b[type as 'u8'] as (v: number) => void).call(b, x as number);
}

/**
 * Encodes everything before the data area: header, KV pairs, tensor infos (offsets computed
 * with `alignment`) and the padding up to the data area. Returns the bytes and each tensor's
 * offset relative to the data area.
 */
export function encodeGgufHeader(
  kvs: ReadonlyMap<string, GgufValue>,
  tensors: readonly GgufTensorInfo[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): { bytes: Uint8Array; offsets: number[]; dataBytes: number } {
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) throw new DsvError(`GGUF alignment must be a positive multiple of 8, got ${alignment}`);
  const b = new Bytes();
  b.u32(GGUF_MAGIC);
  b.u32(GGUF_VERSION);
  b.u64(tensors.length);
  b.u64(kvs.size);
  for (const [key, v] of kvs) {
    b.str(key);
    if (v.type === 'array') {
      b.u32(GgufType.ARRAY);
      b.u32(SCALAR_TYPE[v.itemType]!);
      b.u64(v.value.length);
      for (let i = 0; i < v.value.length; i++) writeScalar(b, key, v.itemType, (v.value as ArrayLike<unknown>)[i]);
    } else {
      b.u32(SCALAR_TYPE[v.type]!);
      writeScalar(b, key, v.type, v.value);
    }
  }
  const names = new Set<string>();
  const offsets: number[] = [];
  let off = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new DsvError(`GGUF: tensor ${t.name} is listed twice`);
    names.add(t.name);
    if (t.ne.length < 1 || t.ne.length > 4) throw new DsvError(`GGUF: tensor ${t.name} has ${t.ne.length} dimensions (ggml allows 1 to 4)`);
    b.str(t.name);
    b.u32(t.ne.length);
    for (const n of t.ne) b.u64(n);
    b.u32(GgmlType[t.type]);
    b.u64(off);
    offsets.push(off);
    off = alignUp(off + ggmlTensorBytes(t), alignment);
  }
  b.zeros(alignUp(b.length, alignment) - b.length);
  return { bytes: b.result(), offsets, dataBytes: off };
}
