/**
 * A small GGUF v3 reader for the tests, written from the format description (ggml's gguf.h),
 * independent of src/io/gguf-format.ts: header, KV pairs (every value type, arrays), tensor
 * infos, the alignment rule and each tensor's raw data bytes. Throws on anything malformed.
 */
import { readFileSync } from 'node:fs';

export type KvValue = number | bigint | boolean | string | KvValue[];

export interface ReadTensor {
  name: string;
  ne: number[];
  type: number;
  offset: number;
  /** The data bytes (exactly the type's size for ne). */
  data: Uint8Array;
}

export interface ReadGguf {
  version: number;
  kv: Map<string, { type: number; value: KvValue; itemType?: number }>;
  tensors: ReadTensor[];
  alignment: number;
  dataStart: number;
  fileSize: number;
}

const TYPE_SIZE: Record<number, [number, number]> = { 0: [1, 4], 1: [1, 2], 30: [1, 2], 8: [32, 34] };

export function readGguf(file: string): ReadGguf {
  const buf = readFileSync(file);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let p = 0;
  const need = (n: number): void => {
    if (p + n > buf.length) throw new Error(`truncated at ${p} (+${n})`);
  };
  const u32 = (): number => { need(4); const x = v.getUint32(p, true); p += 4; return x; };
  const u64 = (): number => { need(8); const x = v.getBigUint64(p, true); p += 8; if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('u64 too large'); return Number(x); };
  const str = (): string => { const n = u64(); need(n); const s = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(p, p + n)); p += n; return s; };
  const scalar = (t: number): KvValue => {
    switch (t) {
      case 0: need(1); return v.getUint8(p++);
      case 1: need(1); return v.getInt8(p++);
      case 2: { need(2); const x = v.getUint16(p, true); p += 2; return x; }
      case 3: { need(2); const x = v.getInt16(p, true); p += 2; return x; }
      case 4: return u32();
      case 5: { need(4); const x = v.getInt32(p, true); p += 4; return x; }
      case 6: { need(4); const x = v.getFloat32(p, true); p += 4; return x; }
      case 7: { need(1); const b = v.getUint8(p++); if (b > 1) throw new Error(`bool byte ${b}`); return b === 1; }
      case 8: return str();
      case 10: { need(8); const x = v.getBigUint64(p, true); p += 8; return x; }
      case 11: { need(8); const x = v.getBigInt64(p, true); p += 8; return x; }
      case 12: { need(8); const x = v.getFloat64(p, true); p += 8; return x; }
      default: throw new Error(`unknown value type ${t}`);
    }
  };
  if (u32() !== 0x46554747) throw new Error('bad magic');
  const version = u32();
  const nt = u64();
  const nkv = u64();
  const kv = new Map<string, { type: number; value: KvValue; itemType?: number }>();
  for (let i = 0; i < nkv; i++) {
    const key = str();
    if (kv.has(key)) throw new Error(`duplicate key ${key}`);
    const t = u32();
    if (t === 9) {
      const it = u32();
      const n = u64();
      const arr: KvValue[] = [];
      for (let j = 0; j < n; j++) arr.push(scalar(it));
      kv.set(key, { type: t, value: arr, itemType: it });
    } else kv.set(key, { type: t, value: scalar(t) });
  }
  const al = kv.get('general.alignment');
  const alignment = al ? (al.value as number) : 32;
  const infos: Omit<ReadTensor, 'data'>[] = [];
  for (let i = 0; i < nt; i++) {
    const name = str();
    const nd = u32();
    const ne: number[] = [];
    for (let d = 0; d < nd; d++) ne.push(u64());
    const type = u32();
    const offset = u64();
    if (offset % alignment !== 0) throw new Error(`${name}: offset ${offset} not aligned to ${alignment}`);
    infos.push({ name, ne, type, offset });
  }
  const dataStart = Math.ceil(p / alignment) * alignment;
  for (let q = p; q < dataStart; q++) if (buf[q] !== 0) throw new Error(`non-zero padding at ${q}`);
  const tensors = infos.map((t) => {
    const sz = TYPE_SIZE[t.type];
    if (!sz) throw new Error(`${t.name}: unknown ggml type ${t.type}`);
    const n = t.ne.reduce((a, b) => a * b, 1);
    if (t.ne[0]! % sz[0] !== 0) throw new Error(`${t.name}: ne[0] not a multiple of the block`);
    const bytes = (n / sz[0]) * sz[1];
    const start = dataStart + t.offset;
    if (start + bytes > buf.length) throw new Error(`${t.name}: data past the end of the file`);
    return { ...t, data: new Uint8Array(buf.buffer, buf.byteOffset + start, bytes) };
  });
  const sorted = tensors.slice().sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.offset < sorted[i - 1]!.offset + sorted[i - 1]!.data.length) throw new Error(`${sorted[i]!.name} overlaps ${sorted[i - 1]!.name}`);
  }
  return { version, kv, tensors, alignment, dataStart, fileSize: buf.length };
}

/** A tensor's data as float32 (F32 and BF16 exact; F16 and Q8_0 dequantised). */
export function tensorF32(t: ReadTensor): Float32Array {
  const v = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const n = t.ne.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const half = (h: number): number => {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 31;
    const m = h & 1023;
    return e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  };
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    switch (t.type) {
      case 0: out[i] = v.getFloat32(4 * i, true); break;
      case 1: out[i] = half(v.getUint16(2 * i, true)); break;
      case 30: u[0] = v.getUint16(2 * i, true) << 16; out[i] = f[0]!; break;
      case 8: { const b = Math.floor(i / 32); out[i] = half(v.getUint16(34 * b, true)) * v.getInt8(34 * b + 2 + (i % 32)); break; }
    }
  }
  return out;
}
