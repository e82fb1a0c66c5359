import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DsvError } from '../src/errors.js';
import {
  configToJson,
  isMoeLayer,
  latentCacheWidth,
  loadModelConfig,
  moeLayerIndices,
  parseModelConfig,
} from '../src/model/config.js';
import { ropeAttentionFactor, softmaxScale, yarnInvFreq } from '../src/model/yarn.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = ROOT + 'test/fixtures/';
const MODEL_FIXTURES = ['tiny-dense-moe', 'tiny-fp8', 'tiny-sharded', 'tiny-v2-routing', 'tiny-v2-greedy'];

function readJson(p: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(p, 'utf8')) as Record<string, unknown>;
}

function close(a: number, b: number, rel = 1e-12): boolean {
  return Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b), 1e-300);
}

test('every fixture config parses and its derived constants match meta.json', () => {
  for (const name of MODEL_FIXTURES) {
    const cfg = loadModelConfig(FIX + name);
    const meta = readJson(FIX + name + '/meta.json') as {
      softmax_scale: number;
      rope_inv_freq: number[];
      rope_attention_factor: number;
      moe_layers: number[];
    };
    assert.ok(close(softmaxScale(cfg), meta.softmax_scale), `${name} softmax_scale ${softmaxScale(cfg)} vs ${meta.softmax_scale}`);
    const inv = yarnInvFreq(cfg);
    assert.equal(inv.length, meta.rope_inv_freq.length, name);
    inv.forEach((v, i) => assert.ok(close(v, meta.rope_inv_freq[i]!), `${name} inv_freq[${i}] ${v} vs ${meta.rope_inv_freq[i]}`));
    assert.ok(close(ropeAttentionFactor(cfg), meta.rope_attention_factor), name);
    assert.deepEqual(moeLayerIndices(cfg), meta.moe_layers, name);
    assert.equal(latentCacheWidth(cfg), cfg.kv_lora_rank + cfg.qk_rope_head_dim);
    // configToJson round-trips
    assert.deepEqual(parseModelConfig(configToJson(cfg)), { ...cfg }, `${name} round trip`);
  }
  const train = loadModelConfig(FIX + 'train-step/config.json');
  assert.equal(train.n_group, 2);
  assert.equal(train.topk_group, 1);
});

test('fixture-specific values: V2 routing, null q_lora_rank, FP8 quantisation, eps', () => {
  const v2 = loadModelConfig(FIX + 'tiny-v2-routing');
  assert.equal(v2.model_type, 'deepseek_v2');
  assert.equal(v2.q_lora_rank, null);
  assert.equal(v2.scoring_func, 'softmax');
  assert.equal(v2.topk_method, 'group_limited_greedy');
  assert.equal(v2.rope_scaling, null);
  assert.equal(v2.num_nextn_predict_layers, 0);
  const greedy = loadModelConfig(FIX + 'tiny-v2-greedy/config.json');
  assert.equal(greedy.rms_norm_eps, 1e-5);
  assert.deepEqual([0, 1, 2, 3, 4].map((i) => isMoeLayer(greedy, i)), [false, false, true, false, true]);
  const fp8 = loadModelConfig(FIX + 'tiny-fp8');
  assert.deepEqual(fp8.quantization_config, {
    quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128], scale_fmt: null,
  });
  const j = configToJson(fp8);
  assert.equal(j['model_type'], 'deepseek_v3');
  assert.deepEqual(j['architectures'], ['DeepseekV3ForCausalLM']);
  assert.deepEqual(j['quantization_config'], readJson(FIX + 'tiny-fp8/config.json')['quantization_config']);
  assert.equal(j['num_key_value_heads'], fp8.num_attention_heads);
  assert.equal(configToJson(v2)['quantization_config'], undefined);
  assert.deepEqual(configToJson(v2)['architectures'], ['DeepseekV2ForCausalLM']);
  const ue = parseModelConfig({ ...readJson(FIX + 'tiny-fp8/config.json'), quantization_config: { quant_method: 'fp8', scale_fmt: 'ue8m0' } });
  assert.equal(ue.quantization_config?.scale_fmt, 'ue8m0');
  assert.equal((configToJson(ue)['quantization_config'] as Record<string, unknown>)['scale_fmt'], 'ue8m0');
});

test('configs/bench-small.json is valid', () => {
  const cfg = loadModelConfig(ROOT + 'configs/bench-small.json');
  assert.equal(cfg.hidden_size, 256);
  assert.deepEqual(moeLayerIndices(cfg, false), [1, 2, 3]);
  assert.equal(softmaxScale(cfg), 1 / Math.sqrt(48));
  assert.deepEqual(parseModelConfig(configToJson(cfg)), cfg);
});

test('absent fields take the Hugging Face defaults', () => {
  const v3 = parseModelConfig({ model_type: 'deepseek_v3' });
  assert.equal(v3.q_lora_rank, 1536);
  assert.equal(v3.kv_lora_rank, 512);
  assert.equal(v3.qk_nope_head_dim, 128);
  assert.equal(v3.qk_rope_head_dim, 64);
  assert.equal(v3.v_head_dim, 128);
  assert.equal(v3.n_group, 8);
  assert.equal(v3.topk_group, 4);
  assert.equal(v3.num_experts_per_tok, 8);
  assert.equal(v3.n_routed_experts, 256);
  assert.equal(v3.routed_scaling_factor, 2.5);
  assert.equal(v3.scoring_func, 'sigmoid');
  assert.equal(v3.topk_method, 'noaux_tc');
  assert.equal(v3.norm_topk_prob, true);
  assert.equal(v3.first_k_dense_replace, 3);
  assert.equal(v3.moe_layer_freq, 1);
  assert.equal(v3.rms_norm_eps, 1e-6);
  assert.equal(v3.rope_theta, 10000);
  assert.equal(v3.num_nextn_predict_layers, 1);
  assert.equal(v3.tie_word_embeddings, false);
  assert.equal(v3.quantization_config, null);
  assert.equal(latentCacheWidth(v3), 576);
  assert.deepEqual(v3.architectures, ['DeepseekV3ForCausalLM']);
  const v2 = parseModelConfig({ model_type: 'deepseek_v2', num_experts_per_tok: 6, n_group: null, topk_group: null });
  assert.equal(v2.scoring_func, 'softmax');
  assert.equal(v2.topk_method, 'greedy');
  assert.equal(v2.norm_topk_prob, false);
  assert.equal(v2.n_group, 1);
  assert.equal(v2.num_nextn_predict_layers, 0);
  assert.equal(v2.first_k_dense_replace, 0);
  // YaRN defaults and the released V3 rope_scaling
  const y = parseModelConfig({
    model_type: 'deepseek_v3',
    max_position_embeddings: 163840,
    rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, mscale: 1.0, mscale_all_dim: 1.0, beta_fast: 32, beta_slow: 1 },
  });
  const m = 0.1 * Math.log(40) + 1;
  assert.ok(close(softmaxScale(y), (m * m) / Math.sqrt(192)));
  assert.equal(ropeAttentionFactor(y), 1);
  const yd = parseModelConfig({ model_type: 'deepseek_v3', rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 1024 } });
  assert.deepEqual([yd.rope_scaling?.beta_fast, yd.rope_scaling?.beta_slow, yd.rope_scaling?.mscale, yd.rope_scaling?.mscale_all_dim], [32, 1, 1, 0]);
  assert.equal(softmaxScale(yd), 1 / Math.sqrt(192));
  assert.ok(close(ropeAttentionFactor(yd), 0.1 * Math.log(4) + 1));
  // extra fields are ignored
  parseModelConfig({ model_type: 'deepseek_v3', aux_loss_alpha: 0.001, ep_size: 1, auto_map: {}, pretraining_tp: 1 });
});

test('isMoeLayer uses i % moe_layer_freq, not (i - first_k_dense_replace)', () => {
  const cfg = parseModelConfig({ model_type: 'deepseek_v3', first_k_dense_replace: 1, moe_layer_freq: 2, num_hidden_layers: 6 });
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => isMoeLayer(cfg, i)), [false, false, true, false, true, false]);
});

test('bad configs are DsvErrors that name the field', () => {
  const base = readJson(FIX + 'tiny-dense-moe/config.json');
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ model_type: 'llama' }, /"model_type" must be "deepseek_v3" or "deepseek_v2"/],
    [{ model_type: undefined }, /"model_type"/],
    [{ n_group: 3 }, /"n_routed_experts" \(16\) must be divisible by n_group \(3\)/],
    [{ topk_group: 5 }, /"topk_group" \(5\) must not exceed n_group \(4\)/],
    [{ num_experts_per_tok: 17 }, /"num_experts_per_tok" \(17\) must not exceed n_routed_experts \(16\)/],
    [{ num_experts_per_tok: 9 }, /"num_experts_per_tok" \(9\) must not exceed topk_group \* experts per group \(2 \* 4\)/],
    [{ n_group: 16, topk_group: 8, num_experts_per_tok: 4 }, /"n_group" \(16\) leaves 1 expert per group/],
    [{ scoring_func: 'relu' }, /"scoring_func" must be one of "sigmoid", "softmax"/],
    [{ topk_method: 'aux' }, /"topk_method" must be one of/],
    [{ hidden_size: 0 }, /"hidden_size" must be positive, got 0/],
    [{ hidden_size: -64 }, /"hidden_size" must be positive/],
    [{ hidden_size: 64.5 }, /"hidden_size" must be an integer, got 64.5/],
    [{ vocab_size: '320' }, /"vocab_size" must be an integer/],
    [{ num_attention_heads: 0 }, /"num_attention_heads"/],
    [{ q_lora_rank: 0 }, /"q_lora_rank" must be positive/],
    [{ qk_rope_head_dim: 7 }, /"qk_rope_head_dim" must be even/],
    [{ first_k_dense_replace: -1 }, /"first_k_dense_replace" must be >= 0/],
    [{ moe_layer_freq: 0 }, /"moe_layer_freq" must be positive/],
    [{ rms_norm_eps: 0 }, /"rms_norm_eps" must be positive/],
    [{ rope_theta: 'big' }, /"rope_theta" must be a finite number/],
    [{ routed_scaling_factor: -2.5 }, /"routed_scaling_factor" must be positive/],
    [{ norm_topk_prob: 'yes' }, /"norm_topk_prob" must be true or false/],
    [{ tie_word_embeddings: 1 }, /"tie_word_embeddings" must be true or false/],
    [{ hidden_act: 'gelu' }, /"hidden_act" must be "silu"/],
    [{ attention_bias: true }, /"attention_bias" must be false/],
    [{ rope_interleave: false }, /"rope_interleave" must be true/],
    [{ rope_scaling: { type: 'linear', factor: 2 } }, /"rope_scaling.type" must be "yarn"/],
    [{ rope_scaling: { type: 'dynamic', factor: 2 } }, /"rope_scaling.type" must be "yarn"/],
    [{ rope_scaling: { type: 'yarn', original_max_position_embeddings: 64 } }, /"rope_scaling.factor" is required/],
    [{ rope_scaling: { type: 'yarn', factor: 4 } }, /"rope_scaling.original_max_position_embeddings" is required/],
    [{ rope_scaling: { type: 'yarn', factor: 0.5, original_max_position_embeddings: 64 } }, /"rope_scaling.factor" must be >= 1/],
    [{ rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 512 } }, /"rope_scaling.original_max_position_embeddings" \(512\) exceeds max_position_embeddings \(256\)/],
    [{ rope_scaling: 'yarn' }, /"rope_scaling" must be null or an object/],
    [{ quantization_config: { quant_method: 'gptq' } }, /"quantization_config.quant_method" must be one of "fp8"/],
    [{ quantization_config: { quant_method: 'fp8', weight_block_size: [64, 64] } }, /"quantization_config.weight_block_size" must be \[128, 128\]/],
    [{ quantization_config: { quant_method: 'fp8', fmt: 'e5m2' } }, /"quantization_config.fmt" must be one of "e4m3"/],
    [{ quantization_config: { quant_method: 'fp8', activation_scheme: 'static' } }, /"quantization_config.activation_scheme"/],
    [{ quantization_config: { quant_method: 'fp8', scale_fmt: 'e8m0x' } }, /"quantization_config.scale_fmt" must be "ue8m0"/],
    [{ architectures: 'DeepseekV3ForCausalLM' }, /"architectures" must be a list of strings/],
    [{ bos_token_id: -1 }, /"bos_token_id" must be a non-negative integer or null/],
  ];
  for (const [patch, re] of cases) {
    const json: Record<string, unknown> = { ...base, ...patch };
    for (const k of Object.keys(patch)) if (patch[k] === undefined) delete json[k];
    assert.throws(
      () => parseModelConfig(json, 'my/config.json'),
      (e: unknown) => {
        assert.ok(e instanceof DsvError, `${JSON.stringify(patch)}: expected DsvError, got ${String(e)}`);
        assert.match(e.message, re, JSON.stringify(patch));
        assert.ok(e.message.startsWith('my/config.json: '), e.message);
        return true;
      },
    );
  }
  assert.throws(() => parseModelConfig({ model_type: 'deepseek_v2' }), /"num_experts_per_tok" is required \(no default\)/);
  assert.throws(() => parseModelConfig([1]), /must be a JSON object/);
  assert.throws(() => loadModelConfig(FIX + 'no-such-dir/config.json'), (e: unknown) => e instanceof DsvError && /cannot read config/.test(e.message));
});
