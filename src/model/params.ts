/**
 * Where the model's parameters come from. Every module asks a `ParamSource` for its tensors by
 * their Hugging Face checkpoint names, with the shape it expects; two sources exist:
 *
 *   - `CheckpointParams`: reads each tensor once, lazily, from a checkpoint (single file or
 *     sharded through its index), checks its shape, upcasts BF16 to float32 (or keeps the bf16
 *     bits when asked) and keeps FP8 weights as E4M3 codes + their `weight_scale_inv`. When the
 *     checkpoint is mapped (openCheckpoint(dir, { map: true })), kept bf16 bits, FP8 codes and
 *     F32 scales are views of the mapping, read in place by the kernels (nothing copied), as is
 *     a BF16 `embed_tokens` in 'bf16' mode (a frozen bf16 Tensor); float32 tensors and upcasts
 *     stay copies (training writes its parameters; the mapping is read-only). Always-used
 *     weights get MADV_WILLNEED (read ahead now), the embedding MADV_RANDOM (a few rows per
 *     token); routed experts keep the default read-ahead, paged in when selected;
 *   - `RandomParams`: Hugging Face's initialisation (normal(0, initializer_range) for linears
 *     and embeddings, ones for norms, zeros for the balance bias), one seeded stream per name.
 *
 * Trainable tensors are `Tensor.param` leaves named after their checkpoint names.
 */
import { type Checkpoint } from '../io/checkpoint-read.js';
import type { HostTensor } from '../io/safetensors-format.js';
import { bf16ArrayToF32 } from '../engine/dtype.js';
import { dequantFp8Weight } from '../engine/fp8/checkpoint-weights.js';
import { largeF32 } from '../engine/memory.js';
import { Tensor } from '../engine/tensor.js';
import { Rng, deriveSeed, type Seed } from '../data/rng.js';
import { DsvError } from '../errors.js';
import { bf16Linear, f32Linear, fp8Linear, type LinearWeight } from './weights.js';
import { fmtShape, sameShape, shapeSize } from '../engine/layout.js';

/** How a plain tensor is initialised by a random source. */
export type Init = 'normal' | 'ones' | 'zeros';

/**
 * Storage of linear weights when loading: 'auto' keeps FP8 weights as codes and upcasts BF16
 * to float32; 'f32' makes every weight a float32 parameter (FP8 dequantised); 'bf16' keeps BF16
 * weights as bf16 bits (and FP8 as codes).
 */
export type WeightMode = 'auto' | 'f32' | 'bf16';

export interface ParamSource {
  /** A float32 tensor (norm weight, embedding, router gate, bias); a param when trainable. */
  tensor(name: string, shape: readonly number[], init: Init, trainable?: boolean): Tensor;
  /** A linear weight [out, in] (`name` ends in `.weight`). */
  linear(name: string, outFeatures: number, inFeatures: number): LinearWeight;
}

/** Reads parameters from an opened checkpoint and records which tensors were used. */
export class CheckpointParams implements ParamSource {
  private readonly used = new Set<string>();

  /** Always-used tensors kept in the mapping, in load order (startReadAhead). */
  private readonly readAhead: string[] = [];

  constructor(
    private readonly ckpt: Checkpoint,
    private readonly mode: WeightMode = 'auto',
  ) {}

  /**
   * Queues the always-used mapped tensors (every kept one but the routed experts), in load
   * order, to the addon's background read-ahead thread (MADV_WILLNEED from that thread), once
   * the model is built: opening does not wait for the reads to be submitted, and the small
   * copies made while building (norms, router weights) are not queued behind a gigabyte of them.
   */
  startReadAhead(): void {
    for (const n of this.readAhead) this.ckpt.advise(n, 'background');
    this.readAhead.length = 0;
  }

  private where(): string {
    return this.ckpt.location;
  }

  private checked(name: string, shape: readonly number[]): void {
    if (!this.ckpt.has(name)) throw new DsvError(`${this.where()}: missing tensor "${name}" (expected shape ${fmtShape(shape)})`);
    const info = this.ckpt.info(name);
    if (!sameShape(info.shape, shape)) {
      throw new DsvError(`${this.where()}: tensor "${name}" has shape ${fmtShape(info.shape)}, expected ${fmtShape(shape)}`);
    }
    this.used.add(name);
  }

  tensor(name: string, shape: readonly number[], _init: Init, trainable = true): Tensor {
    this.checked(name, shape);
    const info = this.ckpt.info(name);
    if (info.tag !== 'F32' && info.tag !== 'BF16' && info.tag !== 'F16') {
      throw new DsvError(`${this.where()}: tensor "${name}" has dtype ${info.tag}; expected F32, BF16 or F16`);
    }
    if (this.ckpt.mapped && this.mode === 'bf16' && info.tag === 'BF16' && name.endsWith('embed_tokens.weight')) {
      const v = this.ckpt.view(name);
      if (v.mapped) {
        this.ckpt.advise(name, 'random');
        return new Tensor(v.data as Uint16Array, shape, 'bf16');
      }
    }
    if (this.ckpt.mapped && info.tag === 'BF16') {
      return Tensor.param(bf16ArrayToF32(this.ckpt.view(name).data as Uint16Array), shape, name, trainable);
    }
    return Tensor.param(this.ckpt.getF32(name), shape, name, trainable);
  }

  /** A kept (never written) tensor: in place when mapped, else a copy; always-used ones are
   * listed for startReadAhead. */
  private kept(name: string): HostTensor {
    if (!this.ckpt.mapped) return this.ckpt.get(name);
    if (!/\.mlp\.experts\.\d+\./.test(name)) this.readAhead.push(name);
    return this.ckpt.view(name);
  }

  /** float32 block scales: a view of an F32 tensor when mapped, else read (and upcast). */
  private scales(name: string): Float32Array {
    const v = this.ckpt.mapped && this.ckpt.info(name).tag === 'F32' ? this.ckpt.view(name) : null;
    return v ? (v.data as Float32Array) : this.ckpt.getF32(name);
  }

  linear(name: string, outFeatures: number, inFeatures: number): LinearWeight {
    const shape = [outFeatures, inFeatures];
    this.checked(name, shape);
    const t = this.ckpt.info(name).tag === 'F32' ? this.ckpt.get(name) : this.kept(name);
    switch (t.dtype) {
      case 'f32':
        return f32Linear(name, Tensor.param(t.data as Float32Array, shape, name));
      case 'bf16': {
        const bits = t.data as Uint16Array;
        if (this.mode === 'bf16') return bf16Linear(name, bits, outFeatures, inFeatures);
        return f32Linear(name, Tensor.param(bf16ArrayToF32(bits), shape, name));
      }
      case 'f8_e4m3': {
        const sName = `${name}_scale_inv`;
        const sShape = [Math.ceil(outFeatures / 128), Math.ceil(inFeatures / 128)];
        this.checked(sName, sShape);
        const scaleInv = this.scales(sName);
        const codes = t.data as Uint8Array;
        if (this.mode === 'f32') {
          return f32Linear(name, Tensor.param(dequantFp8Weight(codes, scaleInv, outFeatures, inFeatures, name), shape, name));
        }
        return fp8Linear(name, codes, scaleInv, outFeatures, inFeatures);
      }
      default:
        throw new DsvError(`${this.where()}: tensor "${name}" has dtype ${this.ckpt.info(name).tag}; a linear weight must be F32, BF16 or F8_E4M3`);
    }
  }

  /** Marks tensors as known but deliberately not loaded (shared copies, rotary caches). */
  skip(name: string): void {
    if (this.ckpt.has(name)) this.used.add(name);
  }

  /** Checkpoint tensors that no module asked for. */
  unused(): string[] {
    return this.ckpt.names().filter((n) => !this.used.has(n));
  }
}

/** Random initialisation following Hugging Face's `_init_weights` for DeepSeek-V3. */
export class RandomParams implements ParamSource {
  constructor(
    private readonly seed: Seed,
    private readonly std: number,
  ) {}

  /** n normal(0, std) values from the stream of `name` (Box-Muller, both outputs of each pair). */
  private normal(name: string, n: number): Float32Array {
    const rng = new Rng(deriveSeed(this.seed, name));
    const out = largeF32(n);
    const twoPi = 2 * Math.PI;
    const inv32 = 1 / 4294967296;
    for (let i = 0; i < n; i += 2) {
      const u1 = (rng.nextUint32() + 0.5) * inv32; // (0, 1)
      const u2 = rng.nextUint32() * inv32;
      const rad = Math.sqrt(-2 * Math.log(u1)) * this.std;
      out[i] = rad * Math.cos(twoPi * u2);
      if (i + 1 < n) out[i + 1] = rad * Math.sin(twoPi * u2);
    }
    return out;
  }

  tensor(name: string, shape: readonly number[], init: Init, trainable = true): Tensor {
    const n = shapeSize(shape);
    return Tensor.param(init === 'normal' ? this.normal(name, n) : largeF32(n).fill(init === 'ones' ? 1 : 0), shape, name, trainable);
  }

  linear(name: string, outFeatures: number, inFeatures: number): LinearWeight {
    return f32Linear(name, this.tensor(name, [outFeatures, inFeatures], 'normal'));
  }
}
