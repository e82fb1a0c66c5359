/**
 * MLA's inference cache (paper section 2.1.2): per token and layer only the normalised latent
 * c^KV_t (kv_lora_rank numbers) and the rotated decoupled key k^R_t (qk_rope_head_dim numbers)
 * are kept, r + dr = 576 numbers in DeepSeek-V3 instead of 2 * n_h * d_h = 32768 for MHA.
 *
 * Layout per layer: [B, maxLen, r + dr] float32, row = [c_kv ; k_pe]. The absorbed attention
 * reads it in place: K = [c_kv ; k_pe] (one key shared by all heads) and V = c_kv, a strided
 * view of the same buffer, so nothing is copied per step.
 */
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';

export class LatentCache {
  /** One [batch, maxLen, width] buffer per attention layer. */
  readonly layers: Float32Array[];
  readonly width: number;
  /** Tokens already committed (the next token's position) when every sequence advances together. */
  length = 0;
  /**
   * Per-slot lengths [batch] when the sequences sit at their own positions (continuous batching,
   * src/inference/continuous-batcher.ts: slot b's next token goes to position lengths[b]).
   */
  readonly lengths: Int32Array;

  constructor(
    readonly numLayers: number,
    readonly batch: number,
    readonly maxLen: number,
    readonly kvLoraRank: number,
    readonly ropeDim: number,
  ) {
    this.width = kvLoraRank + ropeDim;
    this.lengths = new Int32Array(batch);
    this.layers = Array.from({ length: numLayers }, () => new Float32Array(batch * maxLen * this.width));
  }

  /** Numbers stored per token per layer (r + dr). */
  get numbersPerToken(): number {
    return this.width;
  }

  /** Bytes held by the cache buffers. */
  get bytes(): number {
    return this.numLayers * this.batch * this.maxLen * this.width * 4;
  }

  private buffer(layer: number): Float32Array {
    const b = this.layers[layer];
    if (!b) throw new DsvError(`latent cache: no layer ${layer} (the cache has ${this.numLayers})`);
    return b;
  }

  /**
   * Stores c_kv [B, T, r] and rotated k_pe [B, T, dr] (or [B, T, 1, dr]) of `layer` at positions
   * start .. start+T-1 (the data only; the cache is inference state, outside autograd).
   */
  write(layer: number, cKV: Tensor, kPe: Tensor, start: number): void {
    const B = cKV.shape[0]!;
    const T = cKV.shape[1]!;
    if (B !== this.batch) throw new DsvError(`latent cache: batch ${B} does not match the cache batch ${this.batch}`);
    if (start + T > this.maxLen) {
      throw new DsvError(`latent cache: positions ${start}..${start + T - 1} exceed the cache length ${this.maxLen}`);
    }
    const c = cKV.detach().contiguous().f32();
    const k = kPe.detach().contiguous().f32();
    const r = this.kvLoraRank;
    const dr = this.ropeDim;
    const W = this.width;
    const buf = this.buffer(layer);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const o = (b * this.maxLen + start + t) * W;
        const src = b * T + t;
        buf.set(c.subarray(src * r, (src + 1) * r), o);
        buf.set(k.subarray(src * dr, (src + 1) * dr), o + r);
      }
    }
  }

  /** The first `len` rows of a layer as a view [B, len, 1, r + dr] (one KV head). */
  keys(layer: number, len: number): Tensor {
    const W = this.width;
    return new Tensor(this.buffer(layer), [this.batch, len, 1, W], 'f32', [this.maxLen * W, W, W, 1], 0);
  }

  /** c_kv of the first `len` positions as a view [B, len, r]. */
  latents(layer: number, len: number): Tensor {
    const W = this.width;
    return new Tensor(this.buffer(layer), [this.batch, len, this.kvLoraRank], 'f32', [this.maxLen * W, W, 1], 0);
  }

  /** Rotated k_pe of the first `len` positions as a view [B, len, 1, dr]. */
  ropeKeys(layer: number, len: number): Tensor {
    const W = this.width;
    return new Tensor(this.buffer(layer), [this.batch, len, 1, this.ropeDim], 'f32', [this.maxLen * W, W, W, 1], this.kvLoraRank);
  }

  /** Clears the cache for a new sequence (keeps the buffers). */
  reset(): void {
    this.length = 0;
    this.lengths.fill(0);
  }
}
