import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadMobyDick } from '../../src/data/corpus.js';

/**
 * The tiny DeepSeek-V3 config the training tests share: 2 layers (dense + MoE), 8 routed experts
 * in 2 groups (top-2 of them, 1 group kept), a shared expert and one MTP module. `over`
 * replaces fields (e.g. the vocabulary size).
 */
export function tinyConfigJson(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 320, hidden_size: 32,
    intermediate_size: 48, moe_intermediate_size: 16, num_hidden_layers: 2, num_attention_heads: 2,
    n_shared_experts: 1, n_routed_experts: 8, num_experts_per_tok: 2, n_group: 2, topk_group: 1,
    routed_scaling_factor: 2.5, first_k_dense_replace: 1, moe_layer_freq: 1, q_lora_rank: 24, kv_lora_rank: 16,
    qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 8, max_position_embeddings: 256, rope_theta: 10000,
    rope_scaling: null, rms_norm_eps: 1e-6, num_nextn_predict_layers: 1, tie_word_embeddings: false,
    scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, initializer_range: 0.02, torch_dtype: 'float32',
    ...over,
  };
}

/** Writes a tiny training setup into `dir` for CLI tests: config.json (tinyConfigJson(over)) and
 * text.txt (two short Moby-Dick chapters); returns the `--config`, `--data` and `--cache-dir`
 * arguments. */
export function tinyTrainingArgs(dir: string, over: Record<string, unknown> = {}): string[] {
  const cfg = join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify(tinyConfigJson(over)));
  const data = join(dir, 'text.txt');
  writeFileSync(data, loadMobyDick().documents.slice(3, 5).map((d) => d.slice(0, 4000)).join('\n\n'));
  return ['--config', cfg, '--data', data, '--cache-dir', join(dir, 'cache')];
}
