/**
 * GGUF export of checkpoints whose config llama.cpp's deepseek2 cannot take as it is (issue 12:
 * "a checkpoint of our own that you have not seen"), written so that llama.cpp computes the same
 * function (model/gguf-layout.ts; checked against llama.cpp itself by scripts/compare/sweep-gguf.mjs):
 *   - n_shared_experts 0: shared experts of zeros;
 *   - moe_layer_freq > 1: the layers before the first MoE one are the leading dense block, a
 *     later dense layer is a MoE layer with a zero router and zero routed experts whose shared
 *     expert is its dense MLP, and every shared expert is zero-padded to one width;
 *   - first_k_dense_replace beyond the layers: all dense;
 *   - YaRN mscale != mscale_all_dim, or mscale_all_dim absent: the query rows carry the scales;
 *   - group_limited_greedy routing with groups that limit: refused unless approximate.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openCheckpoint } from '../src/io/checkpoint-read.js';
import { writeSafetensors } from '../src/io/safetensors-write.js';
import { configToJson, parseModelConfig } from '../src/model/config.js';
import { f32CheckpointTensors } from '../src/model/checkpoint-layout.js';
import { ggufArchKeys, ggufTensors, leadingDenseLayers, sharedExpertPlan, yarnQueryScales } from '../src/model/gguf-layout.js';
import { DeepseekV3 } from '../src/model/model.js';
import { yarnMscale } from '../src/model/yarn.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

/** ggufTensors of a random tiny checkpoint of tinyConfigJson(over): the tensors by name, their data, the source tensors. */
function layout(over: Record<string, unknown>, opts: { approximate?: boolean } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-gguf-cfg-'));
  try {
    const cfg = parseModelConfig(tinyConfigJson(over));
    const src = f32CheckpointTensors(DeepseekV3.randomInit(cfg, 3));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(configToJson(cfg)));
    writeSafetensors(path.join(dir, 'model.safetensors'), src);
    const ckpt = openCheckpoint(dir);
    try {
      const ts = ggufTensors(cfg, ckpt, 'f32', 'f32', opts);
      const data = new Map(ts.map((t) => [t.name, Float32Array.from([...t.chunks()].flatMap((c) => Array.from(c)))]));
      return { cfg, ts, by: new Map(ts.map((t) => [t.name, t])), data, src: (n: string) => src[n]!.data as Float32Array };
    } finally {
      ckpt.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const allZero = (x: Float32Array): boolean => x.every((v) => v === 0);

/** A [rows, cols] matrix zero-padded to [R, C]. */
function pad(w: Float32Array, rows: number, cols: number, R: number, C: number): Float32Array {
  const o = new Float32Array(R * C);
  for (let r = 0; r < rows; r++) o.set(w.subarray(r * cols, (r + 1) * cols), r * C);
  return o;
}

test('n_shared_experts 0: one shared expert of zeros (llama.cpp requires ffn_*_shexp), with a warning', () => {
  const { cfg, by, data } = layout({ n_shared_experts: 0 });
  assert.deepEqual(sharedExpertPlan(cfg), { count: 1, denseAsMoe: [] });
  for (const n of ['gate', 'up']) assert.deepEqual(by.get(`blk.1.ffn_${n}_shexp.weight`)!.ne, [32, 16]);
  assert.deepEqual(by.get('blk.1.ffn_down_shexp.weight')!.ne, [16, 32]);
  for (const n of ['gate', 'up', 'down']) assert.ok(allZero(data.get(`blk.1.ffn_${n}_shexp.weight`)!), n);
  const { kvs, warnings } = ggufArchKeys(cfg, 'f32', 'x');
  assert.equal(kvs.get('deepseek2.expert_shared_count')!.value, 1);
  assert.match(warnings.join('\n'), /n_shared_experts 0: .*expert_shared_count 1 with zero padding/);
});

test('moe_layer_freq 2: later dense layers become MoE with zero routed experts and the dense MLP as shared expert', () => {
  // layers 0 (MoE: 0 % 2 == 0), 1 (dense), 2 (MoE), MTP 3 (dense); dense MLP 48 wide, experts 16
  const { cfg, ts, by, data, src } = layout({ num_hidden_layers: 3, first_k_dense_replace: 0, moe_layer_freq: 2 });
  assert.equal(leadingDenseLayers(cfg), 0);
  assert.deepEqual(sharedExpertPlan(cfg), { count: 3, denseAsMoe: [1, 3] });
  assert.equal(ts.some((t) => /ffn_(gate|up|down)\.weight$/.test(t.name)), false, 'no dense tensors: llama.cpp makes layers >= lead MoE');
  for (const i of [1, 3]) {
    assert.ok(allZero(data.get(`blk.${i}.ffn_gate_inp.weight`)!));
    assert.ok(allZero(data.get(`blk.${i}.exp_probs_b.bias`)!));
    for (const n of ['gate', 'up', 'down']) {
      assert.ok(allZero(data.get(`blk.${i}.ffn_${n}_exps.weight`)!), `${i} ${n}`);
      assert.deepEqual(by.get(`blk.${i}.ffn_${n}_exps.weight`)!.ne, n === 'down' ? [16, 32, 8] : [32, 16, 8]);
    }
    // the dense MLP is the shared expert, 48 = 3 x 16 wide: no padding needed
    assert.deepEqual(data.get(`blk.${i}.ffn_gate_shexp.weight`), src(`model.layers.${i}.mlp.gate_proj.weight`));
    assert.deepEqual(data.get(`blk.${i}.ffn_down_shexp.weight`), src(`model.layers.${i}.mlp.down_proj.weight`));
  }
  // a real MoE layer: its shared expert (16 wide) padded to 48 with zero rows (gate, up) / columns (down)
  assert.deepEqual(by.get('blk.2.ffn_up_shexp.weight')!.ne, [32, 48]);
  assert.deepEqual(by.get('blk.2.ffn_down_shexp.weight')!.ne, [48, 32]);
  assert.deepEqual(data.get('blk.2.ffn_up_shexp.weight'), pad(src('model.layers.2.mlp.shared_experts.up_proj.weight'), 16, 32, 48, 32));
  assert.deepEqual(data.get('blk.2.ffn_down_shexp.weight'), pad(src('model.layers.2.mlp.shared_experts.down_proj.weight'), 32, 16, 32, 48));
  assert.deepEqual(data.get('blk.2.ffn_gate_inp.weight'), src('model.layers.2.mlp.gate.weight'));
  const { kvs, warnings } = ggufArchKeys(cfg, 'f32', 'x');
  assert.equal(kvs.get('deepseek2.leading_dense_block_count')!.value, 0);
  assert.equal(kvs.get('deepseek2.expert_shared_count')!.value, 3);
  assert.match(warnings.join('\n'), /dense layers 1, 3 after the first MoE layer \(moe_layer_freq 2\)/);
});

test('leading dense block: the layers before the first MoE one (moe_layer_freq, first_k_dense_replace beyond the layers)', () => {
  const lead = (over: Record<string, unknown>): number => leadingDenseLayers(parseModelConfig(tinyConfigJson(over)));
  assert.equal(lead({}), 1);
  assert.equal(lead({ first_k_dense_replace: 0 }), 0);
  assert.equal(lead({ num_hidden_layers: 4, first_k_dense_replace: 1, moe_layer_freq: 3 }), 3, 'layers 1 and 2 are dense (1 % 3, 2 % 3)');
  assert.equal(lead({ first_k_dense_replace: 9 }), 3, 'all dense, MTP included');
  const { cfg, ts } = layout({ first_k_dense_replace: 9 });
  assert.deepEqual(sharedExpertPlan(cfg), { count: 1, denseAsMoe: [] });
  assert.equal(ts.some((t) => t.name.includes('exps') || t.name.includes('shexp')), false);
  assert.ok(ts.some((t) => t.name === 'blk.2.ffn_gate.weight'), 'the MTP layer is dense too');
  // no MoE layer: no shared expert to pad, nothing to warn about
  assert.deepEqual(ggufArchKeys(parseModelConfig(tinyConfigJson({ first_k_dense_replace: 9, n_shared_experts: 0 })), 'f32', 'x').warnings, []);
});

test('YaRN: query rows carry the scales llama.cpp cannot take (mscale != mscale_all_dim, mscale_all_dim absent)', () => {
  const yarn = (rs: Record<string, unknown>) => parseModelConfig(tinyConfigJson({ rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1, ...rs } }));
  assert.deepEqual(yarnQueryScales(parseModelConfig(tinyConfigJson())), [1, 1]);
  assert.deepEqual(yarnQueryScales(yarn({ mscale: 0.707, mscale_all_dim: 0.707 })), [1, 1], 'DeepSeek-V2 release');
  assert.deepEqual(yarnQueryScales(yarn({ mscale: 1, mscale_all_dim: 1 })), [1, 1], 'DeepSeek-V3 release');
  const c = yarnMscale(4, 1) / yarnMscale(4, 0.5);
  assert.deepEqual(yarnQueryScales(yarn({ mscale: 1, mscale_all_dim: 0.5 })), [1, c * c]);
  // mscale_all_dim absent: llama.cpp's cos/sin carry m(1) and its softmax m(1)^2; DeepSeek's cos/sin m(mscale), softmax 1
  const m1 = yarnMscale(4, 1);
  const [n, r] = yarnQueryScales(yarn({ mscale: 0.5 }));
  assert.ok(Math.abs(n - 1 / m1 ** 2) < 1e-15 && Math.abs(r - yarnMscale(4, 0.5) ** 2 / m1 ** 4) < 1e-15, `${n} ${r}`);
  assert.deepEqual(yarnQueryScales(yarn({ factor: 1, mscale: 1, mscale_all_dim: 0.5 })), [1, 1], 'factor 1: no YaRN scaling');
  // the data: q_b's rope rows (per head 8 nope then 4 rope) times c^2, nope rows as they are
  const { data, src } = layout({ rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 0.5 } });
  const q = data.get('blk.0.attn_q_b.weight')!;
  const w = src('model.layers.0.self_attn.q_b_proj.weight');
  for (let j = 0; j < 24; j++) {
    for (let k = 0; k < 24; k++) assert.equal(q[j * 24 + k], j % 12 < 8 ? w[j * 24 + k] : Math.fround(w[j * 24 + k]! * (c * c)), `row ${j}`);
  }
  const { warnings } = ggufArchKeys(yarn({ mscale: 1, mscale_all_dim: 0.5 }), 'f32', 'x');
  assert.equal(warnings.some((x) => /mscale/.test(x)), false, 'no longer an approximation');
});

test('group_limited_greedy with groups that limit: refused (llama.cpp scores groups differently) unless approximate', () => {
  const over = { topk_method: 'group_limited_greedy', scoring_func: 'softmax' };
  assert.throws(() => layout(over), /topk_method = group_limited_greedy with n_group 2, topk_group 1 .*top-2 sum.*--approximate/);
  assert.ok(layout(over, { approximate: true }).by.has('blk.1.ffn_gate_inp.weight'));
  assert.ok(layout({ ...over, topk_group: 2 }).by.has('blk.1.ffn_gate_inp.weight'), 'every group kept: no group limit, the same routing');
});
