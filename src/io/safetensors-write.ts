/**
 * safetensors writer: tensors sorted by name, contiguous, header padded with spaces so the data
 * area starts at a multiple of 8. The file is written to a temporary name in the same directory,
 * flushed, then renamed over the target, so a reader never sees a partial file.
 */
import * as fs from 'node:fs';
import { DsvError } from '../errors.js';
import { writeFileAtomic } from './atomic-write.js';
import type { DType, Storage } from '../engine/dtype.js';
import { bytesPerElement } from '../engine/dtype.js';
import { DTYPE_TO_TAG, shapeNumel } from './safetensors-format.js';

/** A tensor to write: dtype, shape and storage (length = product of shape). */
export interface TensorToWrite {
  dtype: DType;
  shape: readonly number[];
  data: Storage;
}

/** dtype and shape of a tensor to write, without its data (writeSafetensorsStreamed). */
export type TensorSpec = Pick<TensorToWrite, 'dtype' | 'shape'>;

/** Default `__metadata__`: Hugging Face transformers refuses safetensors files without format "pt". */
export const DEFAULT_METADATA: Readonly<Record<string, string>> = { format: 'pt' };

const WRITE_CHUNK = 1 << 30;

function storageMatches(dtype: DType, data: Storage): boolean {
  switch (dtype) {
    case 'f32':
      return data instanceof Float32Array;
    case 'bf16':
      return data instanceof Uint16Array;
    case 'i32':
      return data instanceof Int32Array;
    case 'f8_e4m3':
    case 'f8_e5m2':
    case 'u8':
      return data instanceof Uint8Array;
  }
}

/** Validates one tensor for writing (DsvError naming file and tensor). */
export function checkTensorToWrite(file: string, name: string, t: TensorToWrite): void {
  const where = `${file}: tensor "${name}"`;
  if (name.length === 0 || name === '__metadata__') throw new DsvError(`${file}: invalid tensor name "${name}"`);
  if (!Object.prototype.hasOwnProperty.call(DTYPE_TO_TAG, t.dtype)) throw new DsvError(`${where}: unknown dtype "${t.dtype}"`);
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new DsvError(`${where}: shape must be a list of non-negative integers, got ${JSON.stringify(t.shape)}`);
  }
  if (!storageMatches(t.dtype, t.data)) {
    throw new DsvError(`${where}: data is a ${t.data?.constructor?.name ?? typeof t.data}, not the storage of dtype ${t.dtype}`);
  }
  const n = shapeNumel(t.shape);
  if (t.data.length !== n) {
    throw new DsvError(`${where}: data has ${t.data.length} elements but shape ${JSON.stringify(t.shape)} needs ${n}`);
  }
}

/** Bytes of the data area of one tensor. */
export function tensorByteLength(t: TensorSpec): number {
  return shapeNumel(t.shape) * bytesPerElement(t.dtype);
}

/** Builds the padded header (length prefix included) for tensors written in sorted order. */
function buildHeader(names: string[], tensors: Record<string, TensorSpec>, metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors[name]!;
    const len = tensorByteLength(t);
    header[name] = { dtype: DTYPE_TO_TAG[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + len] };
    offset += len;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = new Uint8Array(8 + padded);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length);
  return out;
}

/** Writes all of `bytes` at the current position of `fd` (looping over short writes). */
export function writeAll(fd: number, bytes: Uint8Array, file: string): void {
  let done = 0;
  while (done < bytes.length) {
    const n = fs.writeSync(fd, bytes, done, Math.min(WRITE_CHUNK, bytes.length - done));
    if (n <= 0) throw new DsvError(`${file}: write failed after ${done} of ${bytes.length} bytes`);
    done += n;
  }
}

/**
 * Writes `tensors` to a safetensors file at `file`, sorted by name, with `__metadata__` =
 * {format: "pt", ...metadata}. Never leaves a partial file at `file`.
 */
export function writeSafetensors(
  file: string,
  tensors: Record<string, TensorToWrite>,
  metadata: Record<string, string> = {},
): void {
  const names = Object.keys(tensors).sort();
  for (const name of names) checkTensorToWrite(file, name, tensors[name]!);
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new DsvError(`${file}: metadata "${k}" must be a string`);
  }
  const header = buildHeader(names, tensors, { ...DEFAULT_METADATA, ...metadata });
  writeFileAtomic(file, (fd) => {
    writeAll(fd, header, file);
    for (const name of names) {
      const d = tensors[name]!.data;
      writeAll(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength), file);
    }
  }, { mkdir: false });
}

/**
 * Writes a safetensors file whose tensors are produced one at a time, in sorted name order, by
 * `produce(name)` (which must return storage of the declared dtype and size): a file larger
 * than memory is never held whole. Atomic like writeSafetensors.
 */
export function writeSafetensorsStreamed(
  file: string,
  specs: Record<string, TensorSpec>,
  produce: (name: string) => Storage,
  metadata: Record<string, string> = {},
): void {
  const names = Object.keys(specs).sort();
  const header = buildHeader(names, specs, { ...DEFAULT_METADATA, ...metadata });
  writeFileAtomic(file, (fd) => {
    writeAll(fd, header, file);
    for (const name of names) {
      const d = produce(name);
      checkTensorToWrite(file, name, { ...specs[name]!, data: d });
      writeAll(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength), file);
    }
  }, { mkdir: false });
}
