/** Loading checkpoints: shape/name checks with clear errors, known extras, MTP skipping, bf16 mode. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { DsvError } from '../src/errors.js';
import { Tensor } from '../src/engine/tensor.js';
import { type TensorToWrite, writeSafetensors } from '../src/io/safetensors-write.js';
import { loadModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { runForward } from '../src/inference/run-forward.js';
import { fixturePath, readTensors, relToMax } from './helpers/fixtures.js';
import { checkpointTensors } from '../src/model/checkpoint-layout.js';

const SRC = 'tiny-v2-greedy';

function writable(ts: Record<string, Tensor>): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  for (const [k, t] of Object.entries(ts)) out[k] = { dtype: t.dtype, shape: t.shape.slice(), data: t.data };
  return out;
}

describe('DeepseekV3.load', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-load-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  let n = 0;
  /** A copy of the SRC checkpoint with its tensors edited. */
  function variant(edit: (ts: Record<string, Tensor>) => void): string {
    const dir = path.join(tmp, `v${n++}`);
    fs.mkdirSync(dir);
    fs.copyFileSync(fixturePath(`${SRC}/config.json`), path.join(dir, 'config.json'));
    const ts = readTensors(fixturePath(`${SRC}/model.safetensors`));
    edit(ts);
    writeSafetensors(path.join(dir, 'model.safetensors'), writable(ts));
    return dir;
  }

  it('a missing tensor is a DsvError naming it and its expected shape', () => {
    const dir = variant((ts) => delete ts['model.layers.2.mlp.experts.5.up_proj.weight']);
    assert.throws(() => DeepseekV3.load(dir), (e: unknown) => {
      assert.ok(e instanceof DsvError);
      assert.match(e.message, /missing tensor "model\.layers\.2\.mlp\.experts\.5\.up_proj\.weight" \(expected shape \[20, 48\]\)/);
      return true;
    });
  });

  it('a wrong shape is a DsvError with the expected and found shapes', () => {
    const dir = variant((ts) => {
      ts['model.layers.0.self_attn.kv_a_layernorm.weight'] = Tensor.zeros([25]);
    });
    assert.throws(() => DeepseekV3.load(dir), /"model\.layers\.0\.self_attn\.kv_a_layernorm\.weight" has shape \[25\], expected \[24\]/);
  });

  it('unknown extra tensors are errors; rotary caches are ignored', () => {
    const bad = variant((ts) => {
      ts['model.layers.0.self_attn.q_a_proj.weight'] = Tensor.zeros([4, 48]);
    });
    assert.throws(() => DeepseekV3.load(bad), /unexpected tensor\(s\).*"model\.layers\.0\.self_attn\.q_a_proj\.weight"/);
    const ok = variant((ts) => {
      ts['model.layers.0.self_attn.rotary_emb.inv_freq'] = Tensor.zeros([3]);
    });
    assert.equal(DeepseekV3.load(ok).layers.length, 5);
  });

  it('mtp: false skips the MTP tensors; mtpForward then explains why it cannot run', () => {
    const m = DeepseekV3.load(fixturePath('tiny-dense-moe'), { mtp: false });
    assert.equal(m.mtp.length, 0);
    assert.ok(![...m.params.keys()].some((k) => k.startsWith('model.layers.3.')));
    const ids = Tensor.fromI32(Int32Array.of(1, 2, 3), [1, 3]);
    assert.throws(() => m.mtpForward(m.forward(ids).hidden, ids), /no MTP module/);
  });

  it("weights: 'bf16' keeps BF16 weights as bf16 bits (half the bytes) and stays close", () => {
    const dir = fixturePath('tiny-sharded');
    const m = DeepseekV3.load(dir, { weights: 'bf16' });
    const kinds = new Set([...m.linears.values()].map((w) => w.kind));
    assert.deepEqual([...kinds], ['bf16']);
    const ids = readTensors(fixturePath('tiny-sharded/inputs.safetensors'))['input_ids']!;
    const exp = readTensors(fixturePath('tiny-sharded/expected.safetensors'))['logits']!;
    const got = runForward(m, ids, { path: 'absorbed' })['logits']!;
    // activations are rounded to bf16 by the kernel: close, not at the float32 tolerance
    assert.ok(relToMax(got, exp) < 3e-2, `${relToMax(got, exp)}`);
  });

  it('params are named after the checkpoint; the balance biases are buffers', () => {
    const m = DeepseekV3.load(fixturePath('tiny-dense-moe'));
    assert.ok(m.params.get('model.layers.1.self_attn.q_b_proj.weight')!.requiresGrad);
    assert.equal(m.params.get('lm_head.weight')!.name, 'lm_head.weight');
    assert.ok(!m.params.has('model.layers.3.embed_tokens.weight'), 'MTP copies of embed/head are shared, not separate');
    assert.deepEqual([...m.balanceBiases().keys()], [1, 2, 3]);
    assert.ok(m.buffers.has('model.layers.3.mlp.gate.e_score_correction_bias'));
  });

  it('checkpointTensors gives back every checkpoint tensor (FP8 as codes + scale_inv, MTP copies shared)', () => {
    for (const name of ['tiny-fp8', 'tiny-dense-moe']) {
      const dir = fixturePath(name);
      const ckpt = readTensors(`${dir}/model.safetensors`);
      const m = DeepseekV3.load(dir);
      const got = checkpointTensors(m);
      assert.deepEqual([...got.keys()].sort(), Object.keys(ckpt).sort(), name);
      for (const [k, t] of got) {
        const e = ckpt[k]!;
        assert.deepEqual(t.shape, e.shape, k);
        if (e.dtype === 'f8_e4m3') assert.deepEqual(t.raw('f8_e4m3'), e.raw('f8_e4m3'), k);
        else assert.deepEqual(t.toF32Array(), e.toF32Array(), k);
      }
      if (name === 'tiny-dense-moe') {
        assert.equal(got.get('model.layers.3.embed_tokens.weight'), m.embedTokens);
        assert.equal(got.get('model.layers.3.shared_head.head.weight'), got.get('lm_head.weight'));
      }
    }
  });

  it('randomInit is deterministic per seed and builds every module of the config', () => {
    const cfg = loadModelConfig(fixturePath('tiny-dense-moe'));
    const a = DeepseekV3.randomInit(cfg, 5);
    const b = DeepseekV3.randomInit(cfg, 5);
    const c = DeepseekV3.randomInit(cfg, 6);
    const name = 'model.layers.2.mlp.experts.3.down_proj.weight';
    assert.deepEqual(a.params.get(name)!.f32(), b.params.get(name)!.f32());
    assert.notDeepEqual(a.params.get(name)!.f32(), c.params.get(name)!.f32());
    assert.deepEqual([...a.params.keys()].sort(), [...DeepseekV3.load(fixturePath('tiny-dense-moe')).params.keys()].sort());
    assert.ok(a.params.get('model.norm.weight')!.f32().every((x) => x === 1));
  });
});
