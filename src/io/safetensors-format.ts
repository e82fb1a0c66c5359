/**
 * The safetensors format: dtype tags, the types shared by the reader and the writer, and the
 * validating header parser.
 *
 * Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON (an object mapping tensor
 * names to `{dtype, shape, data_offsets: [begin, end]}` plus an optional `__metadata__` map of
 * strings), then the data area; offsets are relative to the start of the data area.
 */
import { DsvError } from '../errors.js';
import type { DType, Storage } from '../engine/dtype.js';

/** Bytes per element of every dtype tag of the format (known tags; not all can be loaded). */
export const TAG_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  U16: 2,
  I16: 2,
  F16: 2,
  BF16: 2,
  U32: 4,
  I32: 4,
  F32: 4,
  U64: 8,
  I64: 8,
  F64: 8,
};

/**
 * The in-memory dtype each loadable tag is returned as. F16 is widened to f32 on read; I64 is
 * narrowed to i32 on read, with a range check (an element outside the int32 range is an error).
 * Other known tags (BOOL, I8, U16, ...) can be listed and described but not loaded.
 */
export const TAG_TO_DTYPE: Readonly<Record<string, DType>> = {
  F32: 'f32',
  F16: 'f32',
  BF16: 'bf16',
  F8_E4M3: 'f8_e4m3',
  F8_E5M2: 'f8_e5m2',
  I64: 'i32',
  I32: 'i32',
  U8: 'u8',
};

/** The tag each dtype is written as. */
export const DTYPE_TO_TAG: Readonly<Record<DType, string>> = {
  f32: 'F32',
  bf16: 'BF16',
  f8_e4m3: 'F8_E4M3',
  f8_e5m2: 'F8_E5M2',
  i32: 'I32',
  u8: 'U8',
};

/** Where one tensor lives and what it is, as read from a header. */
export interface TensorInfo {
  name: string;
  /** The dtype tag in the file (e.g. 'BF16', 'F16', 'I64'). */
  tag: string;
  /** The dtype `get` returns (undefined when the tag is known but cannot be loaded). */
  dtype: DType | undefined;
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  fileOffset: number;
  byteLength: number;
  /** Number of elements (product of the shape). */
  numel: number;
  /** Path of the file that holds the tensor. */
  file: string;
}

/** A tensor in memory: dtype, shape and its storage typed array (own, aligned buffer). */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: Storage;
}

/** Read access to a set of named tensors (one safetensors file or a whole checkpoint). */
export interface TensorSource {
  /** Tensor names, sorted. */
  names(): string[];
  has(name: string): boolean;
  /** Header information; DsvError when the name is unknown. */
  info(name: string): TensorInfo;
  /** Reads one tensor from disk. */
  get(name: string): HostTensor;
  /** Reads one F32, F16 or BF16 tensor as float32. */
  getF32(name: string): Float32Array;
  close(): void;
}

/** Largest header accepted (the reference implementation's limit is 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

/** A parsed and validated header. */
export interface ParsedHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string> | null;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parses and validates a header. `dataStart` = 8 + N (absolute offset of the data area) and
 * `dataLength` = bytes available after it. Checks every entry (dtype, shape, offsets, byte
 * length, bounds, overlaps) and throws a DsvError naming `file`, the tensor and the problem.
 * Gaps between tensors and trailing bytes are tolerated.
 */
export function parseHeader(file: string, headerBytes: Uint8Array, dataStart: number, dataLength: number): ParsedHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new DsvError(`${file}: safetensors header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DsvError(`${file}: safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw new DsvError(`${file}: safetensors header must be a JSON object`);
  let metadata: Record<string, string> | null = null;
  const tensors = new Map<string, TensorInfo>();
  for (const name of Object.keys(json)) {
    const entry = json[name];
    if (name === '__metadata__') {
      metadata = parseMetadata(file, entry);
      continue;
    }
    tensors.set(name, parseEntry(file, name, entry, dataStart, dataLength));
  }
  checkOverlaps(file, tensors, dataStart);
  return { tensors, metadata };
}

function parseMetadata(file: string, entry: unknown): Record<string, string> | null {
  if (entry === null) return null;
  if (!isPlainObject(entry)) throw new DsvError(`${file}: __metadata__ must be an object of strings`);
  const out: Record<string, string> = {};
  for (const k of Object.keys(entry)) {
    const v = entry[k];
    if (typeof v !== 'string') throw new DsvError(`${file}: __metadata__["${k}"] must be a string, got ${typeof v}`);
    out[k] = v;
  }
  return out;
}

function parseEntry(file: string, name: string, entry: unknown, dataStart: number, dataLength: number): TensorInfo {
  const where = `${file}: tensor "${name}"`;
  if (name.length === 0) throw new DsvError(`${file}: a tensor has an empty name`);
  if (!isPlainObject(entry)) throw new DsvError(`${where}: header entry must be an object`);
  const tag = entry['dtype'];
  if (typeof tag !== 'string') throw new DsvError(`${where}: dtype must be a string`);
  const size = Object.prototype.hasOwnProperty.call(TAG_BYTES, tag) ? TAG_BYTES[tag] : undefined;
  if (size === undefined) throw new DsvError(`${where}: unknown dtype "${tag}"`);
  const shape = entry['shape'];
  if (!Array.isArray(shape) || !shape.every(isIndex)) {
    throw new DsvError(`${where}: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const offs = entry['data_offsets'];
  if (!Array.isArray(offs) || offs.length !== 2 || !isIndex(offs[0]) || !isIndex(offs[1])) {
    throw new DsvError(`${where}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`);
  }
  const begin: number = offs[0];
  const end: number = offs[1];
  if (end < begin) throw new DsvError(`${where}: data_offsets end ${end} is before begin ${begin}`);
  if (end > dataLength) {
    throw new DsvError(`${where}: data_offsets [${begin}, ${end}] run past the end of the data area (${dataLength} bytes; file truncated?)`);
  }
  // Partial products stay below 2^53 bytes or fail, so the final product is exact.
  const dims = shape as number[];
  let numel = dims.includes(0) ? 0 : 1;
  for (let i = 0; i < dims.length && numel > 0; i++) {
    numel *= dims[i]!;
    if (numel * size > Number.MAX_SAFE_INTEGER) {
      throw new DsvError(`${where}: shape ${JSON.stringify(shape)} of ${tag} is absurdly large (over 2^53 bytes)`);
    }
  }
  if (numel * size !== end - begin) {
    throw new DsvError(
      `${where}: data_offsets span ${end - begin} bytes but shape ${JSON.stringify(shape)} of ${tag} needs ${numel * size}`,
    );
  }
  return {
    name,
    tag,
    dtype: TAG_TO_DTYPE[tag],
    shape: dims.slice(),
    fileOffset: dataStart + begin,
    byteLength: end - begin,
    numel,
    file,
  };
}

function checkOverlaps(file: string, tensors: Map<string, TensorInfo>, dataStart: number): void {
  const list = [...tensors.values()].filter((t) => t.byteLength > 0);
  list.sort((a, b) => a.fileOffset - b.fileOffset);
  for (let i = 1; i < list.length; i++) {
    const prev = list[i - 1]!;
    const cur = list[i]!;
    if (cur.fileOffset < prev.fileOffset + prev.byteLength) {
      const r = (t: TensorInfo): string => `[${t.fileOffset - dataStart}, ${t.fileOffset - dataStart + t.byteLength}]`;
      throw new DsvError(`${file}: tensors "${prev.name}" ${r(prev)} and "${cur.name}" ${r(cur)} overlap`);
    }
  }
}

/** Product of a shape (1 for []). */
export function shapeNumel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
