/**
 * Hugging Face checkpoint directories: `model.safetensors`, or `model.safetensors.index.json`
 * plus the shards it names. `openCheckpoint` validates the index against the shard headers up
 * front (only headers are read) and then serves tensors lazily by name.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DsvError } from '../errors.js';
import { type OpenOptions, SafetensorsFile, type ViewTensor } from './safetensors-read.js';
import type { Advice } from './mapped-file.js';
import type { HostTensor, TensorInfo, TensorSource } from './safetensors-format.js';

/** File name of a single-file checkpoint. */
export const SINGLE_FILE = 'model.safetensors';
/** File name of the shard index. */
export const INDEX_FILE = 'model.safetensors.index.json';

/** A checkpoint opened for lazy reads: one file or several shards behind one name space. */
export class Checkpoint implements TensorSource {
  private constructor(
    /** The directory (or the file, for a bare .safetensors path) that was opened. */
    readonly location: string,
    private readonly files: SafetensorsFile[],
    private readonly owner: Map<string, SafetensorsFile>,
    /** `metadata` of the index (e.g. total_size), or the file's `__metadata__`; null if none. */
    readonly metadata: Record<string, unknown> | null,
  ) {}

  /** Opens a single safetensors file as a checkpoint. */
  static fromFile(file: string, opts: OpenOptions = {}): Checkpoint {
    const f = SafetensorsFile.open(file, opts);
    const owner = new Map<string, SafetensorsFile>();
    for (const n of f.names()) owner.set(n, f);
    return new Checkpoint(file, [f], owner, f.metadata);
  }

  /** Opens a sharded checkpoint through its index file (see openCheckpoint). */
  static fromIndex(indexPath: string, opts: OpenOptions = {}): Checkpoint {
    const dir = path.dirname(indexPath);
    const index = readIndex(indexPath);
    const byShard = new Map<string, SafetensorsFile>();
    const owner = new Map<string, SafetensorsFile>();
    try {
      for (const name of Object.keys(index.weightMap).sort()) {
        const shard = index.weightMap[name]!;
        let f = byShard.get(shard);
        if (!f) {
          const shardPath = path.join(dir, shard);
          if (!fs.existsSync(shardPath)) {
            throw new DsvError(`${indexPath}: weight_map maps "${name}" to ${shard}, which does not exist in ${dir}`);
          }
          f = SafetensorsFile.open(shardPath, opts);
          byShard.set(shard, f);
        }
        if (!f.has(name)) throw new DsvError(`${indexPath}: weight_map maps "${name}" to ${shard}, but that shard has no such tensor`);
        owner.set(name, f);
      }
    } catch (e) {
      for (const f of byShard.values()) f.close();
      throw e;
    }
    return new Checkpoint(indexPath, [...byShard.values()], owner, index.metadata);
  }

  /** Paths of the safetensors files behind this checkpoint. */
  filePaths(): string[] {
    return this.files.map((f) => f.path);
  }

  names(): string[] {
    return [...this.owner.keys()].sort();
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  private fileOf(name: string): SafetensorsFile {
    const f = this.owner.get(name);
    if (!f) throw new DsvError(`${this.location}: checkpoint has no tensor named "${name}"`);
    return f;
  }

  info(name: string): TensorInfo {
    return this.fileOf(name).info(name);
  }

  get(name: string): HostTensor {
    return this.fileOf(name).get(name);
  }

  getF32(name: string): Float32Array {
    return this.fileOf(name).getF32(name);
  }

  /** One tensor in place when its shard is mapped (SafetensorsFile.view), else a copy. */
  view(name: string): ViewTensor {
    return this.fileOf(name).view(name);
  }

  /** madvise for one tensor's pages (no-op when not mapped). */
  advise(name: string, advice: Advice): void {
    this.fileOf(name).advise(name, advice);
  }

  /** Whether every file of the checkpoint is mapped. */
  get mapped(): boolean {
    return this.files.every((f) => f.mapped);
  }

  /** Tensors served as copies by `view` because their offsets are misaligned (all shards). */
  misalignedCopies(): number {
    return this.files.reduce((s, f) => s + f.misalignedCopies, 0);
  }

  /** Sum of the data bytes of every tensor (what an index's total_size should say). */
  totalBytes(): number {
    let s = 0;
    for (const n of this.owner.keys()) s += this.info(n).byteLength;
    return s;
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

interface ShardIndex {
  metadata: Record<string, unknown> | null;
  weightMap: Record<string, string>;
}

/** Reads and validates `model.safetensors.index.json` (structure only; shards are checked by the caller). */
function readIndex(indexPath: string): ShardIndex {
  let text: string;
  try {
    text = fs.readFileSync(indexPath, 'utf8');
  } catch (e) {
    throw new DsvError(`${indexPath}: cannot read shard index (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DsvError(`${indexPath}: shard index is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new DsvError(`${indexPath}: shard index must be a JSON object`);
  }
  const obj = json as Record<string, unknown>;
  const wm = obj['weight_map'];
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw new DsvError(`${indexPath}: weight_map must be an object mapping tensor names to shard files`);
  }
  const weightMap: Record<string, string> = {};
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new DsvError(`${indexPath}: weight_map["${name}"] must be a shard file name, got ${JSON.stringify(shard)}`);
    }
    const parts = shard.split(/[\\/]/);
    if (path.isAbsolute(shard) || parts.includes('..')) {
      throw new DsvError(`${indexPath}: weight_map["${name}"] = ${shard} points outside the checkpoint directory`);
    }
    weightMap[name] = shard;
  }
  if (Object.keys(weightMap).length === 0) throw new DsvError(`${indexPath}: weight_map is empty`);
  const md = obj['metadata'];
  const metadata = typeof md === 'object' && md !== null && !Array.isArray(md) ? (md as Record<string, unknown>) : null;
  return { metadata, weightMap };
}

/**
 * Opens a checkpoint: a directory with `model.safetensors` (preferred when both exist, as in
 * transformers) or `model.safetensors.index.json` + shards, or a path to a `.safetensors` file
 * or to an index json. Index errors (missing shard files, tensors missing from the named shard)
 * are DsvErrors naming the index, the tensor and the shard. `opts.map` maps every file
 * read-only (see SafetensorsFile.view).
 */
export function openCheckpoint(location: string, opts: OpenOptions = {}): Checkpoint {
  let st: fs.Stats;
  try {
    st = fs.statSync(location);
  } catch {
    throw new DsvError(`${location}: checkpoint not found`);
  }
  if (st.isFile()) {
    return location.endsWith('.json') ? Checkpoint.fromIndex(location, opts) : Checkpoint.fromFile(location, opts);
  }
  const single = path.join(location, SINGLE_FILE);
  if (fs.existsSync(single)) return Checkpoint.fromFile(single, opts);
  const index = path.join(location, INDEX_FILE);
  if (fs.existsSync(index)) return Checkpoint.fromIndex(index, opts);
  throw new DsvError(`${location}: no ${SINGLE_FILE} or ${INDEX_FILE} in this directory`);
}
