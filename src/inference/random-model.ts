/**
 * Random models in each weight storage, for benchmarks: Hugging Face initialisation
 * (`RandomParams`), with the linear weights then stored the way a checkpoint would hold them:
 *   - 'f32':  float32 everywhere;
 *   - 'bf16': every linear weight as bfloat16 bits (a BF16 checkpoint loaded with weights
 *             'bf16'); embeddings, norms and the router stay float32;
 *   - 'fp8':  the linears the released DeepSeek-V3 checkpoint stores in FP8 (every attention
 *             projection and every dense / routed / shared expert gate_proj, up_proj, down_proj,
 *             as in test/fixtures/tiny-fp8) quantised with `quantizeBlocks128` into E4M3 codes
 *             plus 128x128 block scales (paper section 3.3.2); lm_head and the MTP eh_proj
 *             stay float32 (BF16 in the checkpoint, upcast by the default 'auto' loading).
 */
import type { Seed } from '../data/rng.js';
import { f32ArrayToBf16 } from '../engine/dtype.js';
import { quantizeBlocks128 } from '../engine/fp8/checkpoint-weights.js';
import type { Tensor } from '../engine/tensor.js';
import type { ModelConfig } from '../model/config.js';
import { DeepseekV3 } from '../model/model.js';
import { type Init, type ParamSource, RandomParams } from '../model/params.js';
import { bf16Linear, fp8Linear, type LinearWeight } from '../model/weights.js';

export type WeightStorage = 'f32' | 'bf16' | 'fp8';

/** Linear weights an FP8 DeepSeek-V3 checkpoint stores as F8_E4M3. */
export function isFp8InCheckpoint(name: string): boolean {
  return /\.self_attn\.(q_a_proj|q_b_proj|q_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)\.weight$/.test(name) ||
    /\.mlp\.(experts\.\d+\.|shared_experts\.)?(gate_proj|up_proj|down_proj)\.weight$/.test(name);
}

/** RandomParams whose linear weights are converted to the requested storage. */
class StoredParams implements ParamSource {
  private readonly inner: RandomParams;
  constructor(seed: Seed, std: number, private readonly storage: WeightStorage) {
    this.inner = new RandomParams(seed, std);
  }

  tensor(name: string, shape: readonly number[], init: Init, trainable = true): Tensor {
    return this.inner.tensor(name, shape, init, trainable);
  }

  linear(name: string, out: number, inF: number): LinearWeight {
    const w = this.inner.linear(name, out, inF);
    if (this.storage === 'f32' || w.kind !== 'f32') return w;
    const data = w.weight.f32();
    if (this.storage === 'bf16') return bf16Linear(name, f32ArrayToBf16(data), out, inF);
    if (!isFp8InCheckpoint(name)) return w;
    const q = quantizeBlocks128(data, out, inF);
    return fp8Linear(name, q.codes, q.scaleInv, out, inF);
  }
}

/** A random model (seeded) with its linear weights in `storage`. */
export function randomModel(cfg: ModelConfig, seed: Seed, storage: WeightStorage, opts: { mtp?: boolean } = {}): DeepseekV3 {
  if (storage === 'f32') return DeepseekV3.randomInit(cfg, seed, opts);
  return DeepseekV3.fromParams(cfg, new StoredParams(seed, cfg.initializer_range, storage), opts);
}
