/**
 * Random checkpoints on disk, for benchmarks at real model sizes (`dsv3 bench decode/prefill
 * --checkpoint-dtype`): a Hugging Face checkpoint directory (config.json + safetensors shards +
 * index) of a config, written tensor by tensor (never whole in memory), then opened like any
 * real checkpoint (mapped). Two storages, as DeepSeek's releases hold them:
 *   - 'bf16': every linear weight, the embedding and lm_head BF16 (DeepSeek-V2-Lite's release);
 *   - 'fp8':  the linears the DeepSeek-V3 release stores as F8_E4M3 (isFp8InCheckpoint: every
 *             attention projection and every expert / dense gate, up, down projection) as E4M3
 *             codes + float32 `weight_scale_inv` per 128x128 block (paper §3.3.2), quantised by
 *             the block kernel; embedding and lm_head BF16 (as released).
 * Norm weights are ones, the router gate and e_score_correction_bias float32 (small). Linear and
 * embedding values are uniform with the initializer's standard deviation (std·√3 bounds, xorshift
 * stream per tensor): a benchmark checkpoint needs finite values of a realistic scale, not a
 * trained distribution, and this writes gigabytes in seconds.
 *
 * `ensureRandomCheckpoint` caches the directory under `cacheDir`, keyed by the config, storage
 * and seed; a `bench-checkpoint.json` written last marks it complete (a killed write is redone).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { kernels } from '../engine/backend.js';
import type { Storage } from '../engine/dtype.js';
import { FP8_BLOCK } from '../engine/fp8/codec.js';
import { DsvError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-write.js';
import { INDEX_FILE } from '../io/checkpoint-read.js';
import { shardFileName } from '../io/checkpoint-write.js';
import { type TensorSpec, writeSafetensorsStreamed } from '../io/safetensors-write.js';
import { isMoeLayer, type ModelConfig } from '../model/config.js';
import { isFp8InCheckpoint } from './random-model.js';

export type CheckpointDtype = 'bf16' | 'fp8';

/** One tensor of a random checkpoint: what to write and how to fill it. */
interface Entry extends TensorSpec {
  name: string;
  fill: 'normal' | 'ones' | 'zeros' | 'fp8' | 'scale';
}

/** Every tensor of a checkpoint of `cfg` (main layers; MTP layers are not written). */
export function randomCheckpointEntries(cfg: ModelConfig, dtype: CheckpointDtype): Entry[] {
  if (cfg.num_nextn_predict_layers > 0) {
    throw new DsvError(`random checkpoints are written without MTP layers: set num_nextn_predict_layers to 0 (got ${cfg.num_nextn_predict_layers})`);
  }
  const D = cfg.hidden_size;
  const H = cfg.num_attention_heads;
  const out: Entry[] = [];
  const vec = (name: string, n: number, fill: 'ones' | 'zeros'): void => void out.push({ name, dtype: 'f32', shape: [n], fill });
  const lin = (name: string, o: number, i: number): void => {
    if (dtype === 'fp8' && isFp8InCheckpoint(name)) {
      out.push({ name, dtype: 'f8_e4m3', shape: [o, i], fill: 'fp8' });
      out.push({ name: `${name}_scale_inv`, dtype: 'f32', shape: [Math.ceil(o / FP8_BLOCK), Math.ceil(i / FP8_BLOCK)], fill: 'scale' });
    } else out.push({ name, dtype: 'bf16', shape: [o, i], fill: 'normal' });
  };
  const mlp = (p: string, inter: number): void => {
    lin(`${p}.gate_proj.weight`, inter, D);
    lin(`${p}.up_proj.weight`, inter, D);
    lin(`${p}.down_proj.weight`, D, inter);
  };
  out.push({ name: 'model.embed_tokens.weight', dtype: 'bf16', shape: [cfg.vocab_size, D], fill: 'normal' });
  const qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim;
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    vec(`${p}.input_layernorm.weight`, D, 'ones');
    vec(`${p}.post_attention_layernorm.weight`, D, 'ones');
    const a = `${p}.self_attn`;
    if (cfg.q_lora_rank) {
      lin(`${a}.q_a_proj.weight`, cfg.q_lora_rank, D);
      vec(`${a}.q_a_layernorm.weight`, cfg.q_lora_rank, 'ones');
      lin(`${a}.q_b_proj.weight`, H * qk, cfg.q_lora_rank);
    } else lin(`${a}.q_proj.weight`, H * qk, D);
    lin(`${a}.kv_a_proj_with_mqa.weight`, cfg.kv_lora_rank + cfg.qk_rope_head_dim, D);
    vec(`${a}.kv_a_layernorm.weight`, cfg.kv_lora_rank, 'ones');
    lin(`${a}.kv_b_proj.weight`, H * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank);
    lin(`${a}.o_proj.weight`, D, H * cfg.v_head_dim);
    if (isMoeLayer(cfg, l)) {
      out.push({ name: `${p}.mlp.gate.weight`, dtype: 'f32', shape: [cfg.n_routed_experts, D], fill: 'normal' });
      if (cfg.topk_method === 'noaux_tc') vec(`${p}.mlp.gate.e_score_correction_bias`, cfg.n_routed_experts, 'zeros');
      for (let e = 0; e < cfg.n_routed_experts; e++) mlp(`${p}.mlp.experts.${e}`, cfg.moe_intermediate_size);
      if (cfg.n_shared_experts > 0) mlp(`${p}.mlp.shared_experts`, cfg.n_shared_experts * cfg.moe_intermediate_size);
    } else mlp(`${p}.mlp`, cfg.intermediate_size);
  }
  vec('model.norm.weight', D, 'ones');
  if (!cfg.tie_word_embeddings) out.push({ name: 'lm_head.weight', dtype: 'bf16', shape: [cfg.vocab_size, D], fill: 'normal' });
  return out;
}

const BYTES: Record<string, number> = { bf16: 2, f32: 4, f8_e4m3: 1 };

/** Data bytes of the checkpoint randomCheckpointEntries describes. */
export function entriesBytes(entries: readonly Entry[]): number {
  let n = 0;
  for (const e of entries) n += e.shape.reduce((a, b) => a * b, 1) * BYTES[e.dtype]!;
  return n;
}

/** Fills `out` with uniform values in [-bound, bound) from a xorshift32 stream seeded by `seed`. */
function uniform(out: Float32Array, bound: number, seed: number): void {
  let s = seed >>> 0 || 0x9e3779b9;
  const k = (2 * bound) / 4294967296;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (s >>> 0) * k - bound;
  }
}

/** A 32-bit seed for one tensor of one checkpoint. */
function tensorSeed(seed: number, name: string): number {
  return createHash('sha256').update(`${seed}:${name}`).digest().readUInt32LE(0);
}

/** Produces the tensors of a shard; FP8 weights keep their scales for the `_scale_inv` entry. */
class Producer {
  private readonly pendingScales = new Map<string, Float32Array>();
  constructor(
    private readonly entries: Map<string, Entry>,
    private readonly std: number,
    private readonly seed: number,
  ) {}

  produce(name: string): Storage {
    const e = this.entries.get(name)!;
    const n = e.shape.reduce((a, b) => a * b, 1);
    const bound = this.std * Math.sqrt(3);
    switch (e.fill) {
      case 'ones':
        return new Float32Array(n).fill(1);
      case 'zeros':
        return new Float32Array(n);
      case 'scale': {
        const s = this.pendingScales.get(name);
        if (!s) throw new DsvError(`random checkpoint: "${name}" written before its weight`);
        this.pendingScales.delete(name);
        return s;
      }
      case 'fp8': {
        const [rows, cols] = e.shape as [number, number];
        const x = new Float32Array(n);
        uniform(x, bound, tensorSeed(this.seed, name));
        const codes = new Uint8Array(n);
        const scales = new Float32Array(Math.ceil(rows / FP8_BLOCK) * Math.ceil(cols / FP8_BLOCK));
        kernels().fp8QuantBlocks128(x, cols, rows, cols, codes, scales, null);
        this.pendingScales.set(`${name}_scale_inv`, scales);
        return codes;
      }
      case 'normal': {
        const x = new Float32Array(n);
        uniform(x, bound, tensorSeed(this.seed, name));
        if (e.dtype === 'f32') return x;
        const u = new Uint32Array(x.buffer);
        const bits = new Uint16Array(n);
        for (let i = 0; i < n; i++) bits[i] = (u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16; // round to nearest even (finite values)
        return bits;
      }
    }
  }
}

/** What a cached checkpoint directory records about itself (written last). */
interface Marker {
  format: 1;
  key: string;
  dtype: CheckpointDtype;
  seed: number;
  files: Record<string, number>;
}
const MARKER = 'bench-checkpoint.json';

/**
 * Writes a random checkpoint of `cfg` into `dir` (config.json, shards of at most
 * `maxShardBytes` data bytes, the index). Tensor order keeps a weight before its `_scale_inv`
 * (sorted names: "x.weight" < "x.weight_scale_inv") inside one shard.
 */
export function writeRandomCheckpoint(dir: string, cfg: ModelConfig, dtype: CheckpointDtype, seed: number, maxShardBytes = 4e9): void {
  const entries = randomCheckpointEntries(cfg, dtype);
  const sorted = entries.slice().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const shards: Entry[][] = [[]];
  let bytes = 0;
  for (let i = 0; i < sorted.length; i++) {
    const e = sorted[i]!;
    const b = entriesBytes([e]);
    const isScale = e.fill === 'scale';
    if (!isScale && bytes > 0 && bytes + b > maxShardBytes) {
      shards.push([]);
      bytes = 0;
    }
    shards[shards.length - 1]!.push(e);
    bytes += b;
  }
  fs.mkdirSync(dir, { recursive: true });
  const byName = new Map(entries.map((e) => [e.name, e]));
  const producer = new Producer(byName, cfg.initializer_range, seed);
  const weightMap: Record<string, string> = {};
  const files: Record<string, number> = {};
  shards.forEach((shard, k) => {
    const file = shardFileName(k + 1, shards.length);
    const specs: Record<string, TensorSpec> = {};
    for (const e of shard) {
      specs[e.name] = { dtype: e.dtype, shape: e.shape };
      weightMap[e.name] = file;
    }
    writeSafetensorsStreamed(path.join(dir, file), specs, (n) => producer.produce(n));
    files[file] = fs.statSync(path.join(dir, file)).size;
  });
  const sortedMap: Record<string, string> = {};
  for (const n of Object.keys(weightMap).sort()) sortedMap[n] = weightMap[n]!;
  writeFileAtomic(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: entriesBytes(entries) }, weight_map: sortedMap }, null, 2) + '\n');
  writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
  const marker: Marker = { format: 1, key: checkpointKey(cfg, dtype, seed), dtype, seed, files };
  writeFileAtomic(path.join(dir, MARKER), JSON.stringify(marker, null, 2) + '\n');
}

/** Cache key of a random checkpoint: config (as parsed), storage and seed. */
export function checkpointKey(cfg: ModelConfig, dtype: CheckpointDtype, seed: number): string {
  return createHash('sha256').update(JSON.stringify({ cfg, dtype, seed, format: 1 })).digest('hex').slice(0, 16);
}

/** Whether `dir` holds a complete random checkpoint with this key (marker present, sizes match). */
function isComplete(dir: string, key: string): boolean {
  let m: Marker;
  try {
    m = JSON.parse(fs.readFileSync(path.join(dir, MARKER), 'utf8')) as Marker;
  } catch {
    return false;
  }
  if (m.format !== 1 || m.key !== key) return false;
  for (const [f, size] of Object.entries(m.files)) {
    try {
      if (fs.statSync(path.join(dir, f)).size !== size) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * The directory of a random checkpoint of `cfg` under `cacheDir` (`<name>-<dtype>-<key>`),
 * written first when missing or incomplete. Returns the directory and whether it was written now.
 */
export function ensureRandomCheckpoint(cacheDir: string, name: string, cfg: ModelConfig, dtype: CheckpointDtype, seed: number): { dir: string; written: boolean } {
  const key = checkpointKey(cfg, dtype, seed);
  const dir = path.join(cacheDir, `${name}-${dtype}-${key}`);
  if (isComplete(dir, key)) return { dir, written: false };
  // incomplete (a killed write leaves temp files behind): the directory is ours, start over
  fs.rmSync(dir, { recursive: true, force: true });
  writeRandomCheckpoint(dir, cfg, dtype, seed);
  return { dir, written: true };
}
