/**
 * What the training experiments share when they plan their runs: the tiny model of --quick, the
 * size of the runs (the quick or the full one, with --steps applied), the model config and the
 * data (prepared once, on first use, and shared by every arm and seed).
 */
import * as path from 'node:path';
import { loadMobyDick } from '../data/corpus.js';
import { prepareData, type PreparedData } from '../data/dataset.js';
import { packageRoot } from '../engine/native.js';
import { loadModelConfig, parseModelConfig, type ModelConfig } from '../model/config.js';
import type { ExperimentSize } from './experiment.js';

/** The tiny model of --quick (as test/helpers/tiny-config.ts): 2 layers (dense + MoE), 8 experts, top-2. */
export const TINY = {
  architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 320, hidden_size: 32,
  intermediate_size: 48, moe_intermediate_size: 16, num_hidden_layers: 2, num_attention_heads: 2,
  n_shared_experts: 1, n_routed_experts: 8, num_experts_per_tok: 2, n_group: 2, topk_group: 1,
  routed_scaling_factor: 2.5, first_k_dense_replace: 1, moe_layer_freq: 1, q_lora_rank: 24, kv_lora_rank: 16,
  qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 8, max_position_embeddings: 256, rope_theta: 10000,
  rope_scaling: null, rms_norm_eps: 1e-6, num_nextn_predict_layers: 1, tie_word_embeddings: false,
  scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, initializer_range: 0.02, torch_dtype: 'float32',
};

/**
 * The size of the runs: `quick` or `full`, with --steps applied; when --steps is given and the
 * size evaluates periodically, `evalPoints` evaluations are spread over the run.
 */
export function runSize<Z extends { steps: number; evalEvery?: number }>(size: ExperimentSize, quick: Z, full: Z, evalPoints = 6): Z {
  const z: Z = { ...(size.quick ? quick : full), ...(size.steps !== undefined ? { steps: size.steps } : {}) };
  if (size.steps !== undefined && z.evalEvery !== undefined) z.evalEvery = Math.max(1, Math.round(z.steps / evalPoints));
  return z;
}

/** The model of the runs: TINY (with `tinyOver`) under --quick, else the config file (relative to the package). */
export function experimentConfig(quick: boolean, config: string, tinyOver: Record<string, unknown> = {}): ModelConfig {
  return quick ? parseModelConfig({ ...TINY, ...tinyOver }, 'tiny config') : loadModelConfig(path.join(packageRoot(), config));
}

/** The data of a run: --quick two short chapters of Moby-Dick, else the whole book. */
export function experimentData(quick: boolean, cfg: ModelConfig, seq: number): PreparedData {
  return quick
    ? prepareData({ corpus: { name: 'moby-dick (2 chapters)', documents: loadMobyDick().documents.slice(3, 5).map((d) => d.slice(0, 4000)) }, vocabSize: cfg.vocab_size, cacheDir: null, seqLen: seq })
    : prepareData({ vocabSize: cfg.vocab_size, seqLen: seq });
}

/** `experimentData`, prepared on the first call and shared after. */
export function lazyExperimentData(quick: boolean, cfg: ModelConfig, seq: number): () => PreparedData {
  let data: PreparedData | null = null;
  return () => (data ??= experimentData(quick, cfg, seq));
}
