/**
 * RMSNorm (Zhang & Sennrich 2019), used before attention and FFN in every block, on the MLA
 * latents c^Q and c^KV (paper Eqs. 1 and 6: the "compressed" vectors are normalised before the
 * up-projections) and in the MTP module: y = x / sqrt(mean(x^2) + eps) * weight.
 *
 * The eps follows Hugging Face: the two MLA latent norms (`q_a_layernorm`, `kv_a_layernorm`)
 * always use 1e-6 (`LATENT_NORM_EPS`), every other norm uses `rms_norm_eps` from the config.
 */
import { rmsNorm, type RmsNormOptions } from '../engine/ops/index.js';
import type { Tensor } from '../engine/tensor.js';
import type { ParamSource } from './params.js';

/** eps of q_a_layernorm / kv_a_layernorm, whatever rms_norm_eps says (HF builds them with the default). */
export const LATENT_NORM_EPS = 1e-6;

export class RMSNorm {
  /** [dim] scale, a parameter named `<prefix>.weight`. */
  readonly weight: Tensor;

  constructor(
    src: ParamSource,
    prefix: string,
    readonly dim: number,
    readonly eps: number,
  ) {
    this.weight = src.tensor(`${prefix}.weight`, [dim], 'ones');
  }

  /**
   * bf16Out: a BF16 Linear reads the result next (weights.ts feedsBf16Linear); also write its
   * bf16 bits. recomputeInput: backward gets x again instead of keeping it (ops/norm.ts).
   */
  forward(x: Tensor, opts: RmsNormOptions = {}): Tensor {
    return rmsNorm(x, this.weight, this.eps, opts);
  }
}
