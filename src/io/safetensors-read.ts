/**
 * Lazy safetensors reader: `open` reads and validates only the header; `get` reads one tensor's
 * bytes at its offset into a freshly allocated (hence aligned) buffer. Nothing else is kept in
 * memory, so loading a model tensor by tensor never holds two copies of it.
 *
 * Opened with `{ map: true }` (and the addon loaded), the whole file is also mapped read-only
 * (mapped-file.ts) and `view` returns tensors as typed-array views of the mapping: no byte is
 * read or copied until a kernel touches it. safetensors offsets need not be aligned for the
 * element type (the data area starts at 8 + header length); a tensor whose file offset is not a
 * multiple of its element size cannot be a Uint16Array / Float32Array view, so `view` copies it
 * instead and counts it in `misalignedCopies`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { DsvError } from '../errors.js';
import { bf16ArrayToF32 } from '../engine/dtype.js';
import { type Advice, adviseRange, mapReadOnly } from './mapped-file.js';
import { MAX_HEADER_BYTES, parseHeader, TAG_BYTES } from './safetensors-format.js';
import type { HostTensor, TensorInfo, TensorSource } from './safetensors-format.js';

/** Largest single read (fs.readSync takes at most 2 GiB - 1 per call). */
const READ_CHUNK = 1 << 30;

/** Reads exactly `length` bytes at `position` into `dst` or throws a DsvError. */
export function readExactly(fd: number, dst: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < dst.length) {
    const n = fs.readSync(fd, dst, done, Math.min(READ_CHUNK, dst.length - done), position + done);
    if (n <= 0) throw new DsvError(`${what}: unexpected end of file (read ${done} of ${dst.length} bytes)`);
    done += n;
  }
}

/** float16 bits -> float32 value. */
function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Options of SafetensorsFile.open / openCheckpoint. */
export interface OpenOptions {
  /** Map the file read-only so `view` serves tensors in place (default false: copies only). */
  map?: boolean;
}

/** A tensor from `view`: `mapped` says whether `data` is a view of the file mapping (read-only). */
export interface ViewTensor extends HostTensor {
  mapped: boolean;
}

/** Tags `view` can serve as views of the mapping (their bytes are the in-memory format). */
const VIEW_TAGS = new Set(['F32', 'BF16', 'F8_E4M3', 'F8_E5M2', 'I32', 'U8']);

/** One safetensors file opened for lazy, validated reads. */
export class SafetensorsFile implements TensorSource {
  /** Header `__metadata__` (null when absent). */
  readonly metadata: Record<string, string> | null;
  /** Size of the file in bytes when opened. */
  readonly fileSize: number;
  /** Tensors `view` had to copy because their offset is misaligned for their element type. */
  misalignedCopies = 0;
  private fd: number | null;
  private readonly tensors: Map<string, TensorInfo>;
  private readonly sortedNames: string[];
  /** The whole file mapped read-only from offset 0, or null (not asked, no addon, empty file). */
  private readonly mapping: ArrayBuffer | null;

  private constructor(
    readonly path: string,
    fd: number,
    fileSize: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string> | null,
    mapping: ArrayBuffer | null,
  ) {
    this.fd = fd;
    this.fileSize = fileSize;
    this.tensors = tensors;
    this.metadata = metadata;
    this.sortedNames = [...tensors.keys()].sort();
    this.mapping = mapping;
  }

  /** Whether the file is mapped (so `view` serves aligned tensors in place). */
  get mapped(): boolean {
    return this.mapping !== null;
  }

  /**
   * Opens `path` and validates its header (see parseHeader); reads no tensor data. With
   * `map`, also maps the file (O(1): nothing is read); falls back to copies without the addon.
   */
  static open(path: string, opts: OpenOptions = {}): SafetensorsFile {
    if (os.endianness() !== 'LE') throw new DsvError(`${path}: safetensors loading needs a little-endian host`);
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      throw new DsvError(`${path}: cannot open safetensors file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new DsvError(`${path}: not a regular file`);
      const size = st.size;
      if (size < 8) throw new DsvError(`${path}: file is ${size} bytes, too short for a safetensors header`);
      const lenBytes = new Uint8Array(8);
      readExactly(fd, lenBytes, 0, `${path}: header length`);
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new DsvError(`${path}: header length ${n} is absurdly large (limit ${MAX_HEADER_BYTES}); not a safetensors file?`);
      }
      const headerLen = Number(n);
      if (headerLen > size - 8) {
        throw new DsvError(`${path}: header length ${headerLen} runs past the end of the file (${size} bytes; truncated?)`);
      }
      if (headerLen < 2) throw new DsvError(`${path}: header length ${headerLen} is too small for a JSON header`);
      const header = new Uint8Array(headerLen);
      readExactly(fd, header, 8, `${path}: header`);
      const dataStart = 8 + headerLen;
      const parsed = parseHeader(path, header, dataStart, size - dataStart);
      let mapping: ArrayBuffer | null = null;
      if (opts.map) {
        try {
          mapping = mapReadOnly(fd, size);
        } catch (e) {
          throw new DsvError(`${path}: cannot map the file (${(e as Error).message})`);
        }
      }
      return new SafetensorsFile(path, fd, size, parsed.tensors, parsed.metadata, mapping);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Tensor names, sorted. */
  names(): string[] {
    return this.sortedNames.slice();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Header information of one tensor. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new DsvError(`${this.path}: no tensor named "${name}"`);
    return t;
  }

  /** Reads the raw bytes of one tensor (no dtype conversion). */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    if (this.fd === null) throw new DsvError(`${this.path}: file is closed (reading "${name}")`);
    const bytes = new Uint8Array(t.byteLength);
    readExactly(this.fd, bytes, t.fileOffset, `${this.path}: tensor "${name}"`);
    return bytes;
  }

  /**
   * Reads one tensor. F16 comes back as f32, I64 as i32 (DsvError if a value is outside the
   * int32 range), BF16 as raw bf16 bits, F8 as raw codes.
   */
  get(name: string): HostTensor {
    const t = this.info(name);
    if (t.dtype === undefined) throw new DsvError(`${this.path}: tensor "${name}" has dtype ${t.tag}, which cannot be loaded`);
    const bytes = this.readBytes(name);
    const buf = bytes.buffer;
    const shape = t.shape.slice();
    switch (t.tag) {
      case 'F32':
        return { dtype: 'f32', shape, data: new Float32Array(buf) };
      case 'F16': {
        const h = new Uint16Array(buf);
        const out = new Float32Array(h.length);
        for (let i = 0; i < h.length; i++) out[i] = f16ToF32(h[i]!);
        return { dtype: 'f32', shape, data: out };
      }
      case 'BF16':
        return { dtype: 'bf16', shape, data: new Uint16Array(buf) };
      case 'F8_E4M3':
        return { dtype: 'f8_e4m3', shape, data: bytes };
      case 'F8_E5M2':
        return { dtype: 'f8_e5m2', shape, data: bytes };
      case 'I32':
        return { dtype: 'i32', shape, data: new Int32Array(buf) };
      case 'I64': {
        const v = new BigInt64Array(buf);
        const out = new Int32Array(v.length);
        for (let i = 0; i < v.length; i++) {
          const x = v[i]!;
          if (x > 2147483647n || x < -2147483648n) {
            throw new DsvError(`${this.path}: tensor "${name}" (I64) element ${i} = ${x} does not fit in int32`);
          }
          out[i] = Number(x);
        }
        return { dtype: 'i32', shape, data: out };
      }
      default:
        return { dtype: 'u8', shape, data: bytes };
    }
  }

  /**
   * One tensor in place: for F32, BF16, F8, I32 and U8 tensors of a mapped file whose offset is
   * aligned for the element type, a typed-array view of the mapping (`mapped: true`; read-only
   * memory: never write to it). Otherwise (not mapped, misaligned, or a tag converted on read)
   * what `get` returns, a copy (`mapped: false`); misaligned ones are counted in misalignedCopies.
   */
  view(name: string): ViewTensor {
    const t = this.info(name);
    const m = this.mapping;
    if (m === null || !VIEW_TAGS.has(t.tag) || t.dtype === undefined) return { ...this.get(name), mapped: false };
    const size = TAG_BYTES[t.tag]!;
    if (t.fileOffset % size !== 0) {
      this.misalignedCopies++;
      return { ...this.get(name), mapped: false };
    }
    const shape = t.shape.slice();
    const o = t.fileOffset;
    switch (t.tag) {
      case 'F32':
        return { dtype: 'f32', shape, data: new Float32Array(m, o, t.numel), mapped: true };
      case 'BF16':
        return { dtype: 'bf16', shape, data: new Uint16Array(m, o, t.numel), mapped: true };
      case 'I32':
        return { dtype: 'i32', shape, data: new Int32Array(m, o, t.numel), mapped: true };
      default:
        return { dtype: t.dtype, shape, data: new Uint8Array(m, o, t.numel), mapped: true };
    }
  }

  /** madvise for one tensor's pages (no-op when the file is not mapped). */
  advise(name: string, advice: Advice): void {
    const t = this.info(name);
    if (this.mapping && t.byteLength > 0) adviseRange(this.mapping, t.fileOffset, t.byteLength, advice);
  }

  /** Reads an F32, F16 or BF16 tensor as float32. */
  getF32(name: string): Float32Array {
    const t = this.info(name);
    if (t.tag !== 'F32' && t.tag !== 'F16' && t.tag !== 'BF16') {
      throw new DsvError(`${this.path}: tensor "${name}" has dtype ${t.tag}; expected a floating-point tensor (F32, F16 or BF16)`);
    }
    const got = this.get(name);
    return got.dtype === 'bf16' ? bf16ArrayToF32(got.data as Uint16Array) : (got.data as Float32Array);
  }

  /**
   * Closes the file descriptor; later reads throw. Safe to call twice. Views from `view` stay
   * valid: the mapping lives until the last of them is collected.
   */
  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}
