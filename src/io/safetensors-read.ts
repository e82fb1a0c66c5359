/**
 * Lazy safetensors reader: `open` reads and validates only the header; `get` reads one tensor's
 * bytes at its offset into a freshly allocated (hence aligned) buffer. Nothing else is kept in
 * memory, so loading a model tensor by tensor never holds two copies of it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { DsvError } from '../errors.js';
import { bf16ArrayToF32 } from '../engine/dtype.js';
import { MAX_HEADER_BYTES, parseHeader } from './safetensors-format.js';
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

/** One safetensors file opened for lazy, validated reads. */
export class SafetensorsFile implements TensorSource {
  /** Header `__metadata__` (null when absent). */
  readonly metadata: Record<string, string> | null;
  /** Size of the file in bytes when opened. */
  readonly fileSize: number;
  private fd: number | null;
  private readonly tensors: Map<string, TensorInfo>;
  private readonly sortedNames: string[];

  private constructor(
    readonly path: string,
    fd: number,
    fileSize: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string> | null,
  ) {
    this.fd = fd;
    this.fileSize = fileSize;
    this.tensors = tensors;
    this.metadata = metadata;
    this.sortedNames = [...tensors.keys()].sort();
  }

  /** Opens `path` and validates its header (see parseHeader); reads no tensor data. */
  static open(path: string): SafetensorsFile {
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
      return new SafetensorsFile(path, fd, size, parsed.tensors, parsed.metadata);
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

  /** Reads an F32, F16 or BF16 tensor as float32. */
  getF32(name: string): Float32Array {
    const t = this.info(name);
    if (t.tag !== 'F32' && t.tag !== 'F16' && t.tag !== 'BF16') {
      throw new DsvError(`${this.path}: tensor "${name}" has dtype ${t.tag}; expected a floating-point tensor (F32, F16 or BF16)`);
    }
    const got = this.get(name);
    return got.dtype === 'bf16' ? bf16ArrayToF32(got.data as Uint16Array) : (got.data as Float32Array);
  }

  /** Closes the file descriptor; later reads throw. Safe to call twice. */
  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}
