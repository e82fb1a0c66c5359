/**
 * Writing Hugging Face checkpoints: `model.safetensors` when everything fits in one shard,
 * otherwise `model-0000k-of-0000n.safetensors` + `model.safetensors.index.json`, as
 * transformers' `save_pretrained` lays them out.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DsvError } from '../errors.js';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint-read.js';
import { writeFileAtomic } from './atomic-write.js';
import { checkTensorToWrite, tensorByteLength, writeSafetensors } from './safetensors-write.js';
import type { TensorToWrite } from './safetensors-write.js';

/** transformers' default max_shard_size ("5GB"). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;

/** What writeShardedCheckpoint wrote. */
export interface WrittenCheckpoint {
  /** Paths of the safetensors files written, in shard order. */
  files: string[];
  /** Path of the index json, or null when a single model.safetensors was written. */
  index: string | null;
  /** Sum of the tensors' data bytes (the index's total_size). */
  totalSize: number;
}

/** HF shard file name: model-00001-of-00003.safetensors. */
export function shardFileName(k: number, n: number): string {
  const pad = (x: number): string => String(x).padStart(5, '0');
  return `model-${pad(k)}-of-${pad(n)}.safetensors`;
}

/**
 * Splits the tensors (in the record's insertion order, i.e. module order) into consecutive
 * shards of at most maxShardBytes data bytes (a tensor larger than that gets a shard of its own)
 * and writes them into `dir` (created if missing). One shard is written as model.safetensors
 * with no index. Each file is written atomically; afterwards checkpoint files of a previous
 * layout in `dir` (the other single/index file, shards not written now) are removed.
 */
export function writeShardedCheckpoint(
  dir: string,
  tensors: Record<string, TensorToWrite>,
  maxShardBytes: number = DEFAULT_MAX_SHARD_BYTES,
  metadata: Record<string, string> = {},
): WrittenCheckpoint {
  if (!Number.isSafeInteger(maxShardBytes) || maxShardBytes <= 0) {
    throw new DsvError(`${dir}: maxShardBytes must be a positive integer, got ${maxShardBytes}`);
  }
  const names = Object.keys(tensors);
  if (names.length === 0) throw new DsvError(`${dir}: no tensors to write`);
  for (const name of names) checkTensorToWrite(dir, name, tensors[name]!);
  const shards: string[][] = [];
  let cur: string[] = [];
  let curBytes = 0;
  let totalSize = 0;
  for (const name of names) {
    const len = tensorByteLength(tensors[name]!);
    totalSize += len;
    if (cur.length > 0 && curBytes + len > maxShardBytes) {
      shards.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(name);
    curBytes += len;
  }
  shards.push(cur);
  fs.mkdirSync(dir, { recursive: true });

  const n = shards.length;
  const fileNames = n === 1 ? [SINGLE_FILE] : shards.map((_, k) => shardFileName(k + 1, n));
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, k) => {
    const subset: Record<string, TensorToWrite> = {};
    for (const name of shard) {
      subset[name] = tensors[name]!;
      weightMap[name] = fileNames[k]!;
    }
    writeSafetensors(path.join(dir, fileNames[k]!), subset, metadata);
  });
  let index: string | null = null;
  if (n > 1) {
    index = path.join(dir, INDEX_FILE);
    const sortedMap: Record<string, string> = {};
    for (const name of Object.keys(weightMap).sort()) sortedMap[name] = weightMap[name]!;
    const text = JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sortedMap }, null, 2) + '\n';
    writeFileAtomic(index, text, { mkdir: false });
  }
  removeStale(dir, new Set([...fileNames, ...(index ? [INDEX_FILE] : [])]));
  return { files: fileNames.map((f) => path.join(dir, f)), index, totalSize };
}

/** Removes checkpoint files of another layout left in `dir` by an earlier save. */
function removeStale(dir: string, keep: Set<string>): void {
  for (const f of fs.readdirSync(dir)) {
    if (keep.has(f)) continue;
    if (f === SINGLE_FILE || f === INDEX_FILE || SHARD_RE.test(f)) fs.rmSync(path.join(dir, f), { force: true });
  }
}
