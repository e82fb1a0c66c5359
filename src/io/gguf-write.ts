/**
 * Writes a GGUF file (gguf-format.ts) atomically (temp file + rename, src/io/atomic-write.ts),
 * streaming: each tensor's data comes as float32 chunks of whole rows, is encoded to its ggml
 * type (gguf-quant.ts) and written at once, so a checkpoint larger than RAM exports in the
 * memory of its largest chunk.
 */
import * as fs from 'node:fs';
import { writeFileAtomic } from './atomic-write.js';
import { DsvError } from '../errors.js';
import { encodeGgufHeader, ggmlTensorBytes, GGML_BLOCK, GGUF_DEFAULT_ALIGNMENT, type GgufTensorInfo, type GgufValue } from './gguf-format.js';
import { encodeAs } from './gguf-quant.js';

/** A tensor to write: its info and a source of float32 data in ggml order (whole ne[0] rows per chunk). */
export interface GgufTensorToWrite extends GgufTensorInfo {
  chunks(): Iterable<Float32Array>;
}

function writeAll(fd: number, b: Uint8Array): void {
  let off = 0;
  while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off);
}

/** Writes `file`; returns its size in bytes. */
export function writeGguf(
  file: string,
  kvs: ReadonlyMap<string, GgufValue>,
  tensors: readonly GgufTensorToWrite[],
  opts: { alignment?: number } = {},
): number {
  const alignment = opts.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const al = kvs.get('general.alignment');
  if (al !== undefined && (al.type !== 'u32' || al.value !== alignment)) {
    throw new DsvError(`GGUF: general.alignment must be a u32 equal to the alignment used (${alignment})`);
  }
  const { bytes, offsets, dataBytes } = encodeGgufHeader(kvs, tensors, alignment);
  writeFileAtomic(file, (fd) => {
    writeAll(fd, bytes);
    let pos = 0;
    tensors.forEach((t, i) => {
      const start = offsets[i]!;
      if (start > pos) writeAll(fd, new Uint8Array(start - pos));
      pos = start;
      const want = ggmlTensorBytes(t);
      const rowLen = t.ne[0]!;
      let written = 0;
      for (const c of t.chunks()) {
        if (c.length % rowLen !== 0) throw new DsvError(`GGUF: a chunk of ${t.name} holds ${c.length} values, not whole rows of ${rowLen}`);
        const enc = encodeAs(t.type, c);
        writeAll(fd, enc);
        written += enc.length;
      }
      if (written !== want) {
        const per = GGML_BLOCK[t.type];
        throw new DsvError(`GGUF: ${t.name} produced ${(written / per.bytes) * per.elems} values, expected ${(want / per.bytes) * per.elems} for ne [${t.ne.join(', ')}]`);
      }
      pos += written;
    });
    if (dataBytes > pos) writeAll(fd, new Uint8Array(dataBytes - pos));
  });
  return bytes.length + dataBytes;
}
