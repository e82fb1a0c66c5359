/**
 * The engine on each weight storage against the model's own cached decoding: random models
 * (tiny-dense-moe's config) with float32, bf16 and FP8 (quantizeBlocks128) linear weights; the
 * session's prefill + decode logits equal `DeepseekV3.prefill` / `decodeStep` (absorbed path)
 * within 2e-5 x max|logits|, with batch 2 and a prefill in chunks. Also the bench protocol and
 * the `dsv3 bench decode` / `prefill` commands on a tiny model.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { Tensor } from '../src/engine/tensor.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { measureDecode, measurePrefill, measureSpeculative, profileDecode, promptIds } from '../src/inference/measure.js';
import { isFp8InCheckpoint, randomModel, type WeightStorage } from '../src/inference/random-model.js';
import { loadModelConfig } from '../src/model/config.js';
import type { DeepseekV3 } from '../src/model/model.js';
import { setAbsorbedKvBBf16 } from '../src/model/mla.js';
import { roundBf16, sum } from '../src/engine/ops/index.js';
import { backward } from '../src/engine/autograd.js';
import { bf16ToF32, f32ToBf16 } from '../src/engine/dtype.js';
import { fixturePath, modelTolerance, relToMax } from './helpers/fixtures.js';

const TOL = modelTolerance();
const cfgPath = fixturePath('tiny-dense-moe/config.json');
const cfg = loadModelConfig(cfgPath);

/** [B, S, V] logits of the model's cached path: prefill N tokens, then one decodeStep per token. */
function modelDecode(model: DeepseekV3, ids: Int32Array, B: number, S: number, N: number): Tensor {
  const cache = model.newCache(B, S);
  const t = Tensor.fromI32(ids, [B, S]);
  const steps = [model.prefill(t.slice(1, 0, N).contiguous(), cache, { path: 'absorbed' })];
  for (let s = N; s < S; s++) steps.push(model.decodeStep(t.slice(1, s, s + 1).contiguous().i32().slice(), cache, { path: 'absorbed' }));
  const V = model.cfg.vocab_size;
  const out = new Float32Array(B * S * V);
  let t0 = 0;
  for (const l of steps) {
    const T = l.shape[1]!;
    const d = l.contiguous().f32();
    for (let b = 0; b < B; b++) out.set(d.subarray(b * T * V, (b + 1) * T * V), (b * S + t0) * V);
    t0 += T;
  }
  return Tensor.fromF32(out, [B, S, V]);
}

function sessionDecode(model: DeepseekV3, ids: Int32Array, B: number, S: number, N: number, chunk: number): Tensor {
  const V = model.cfg.vocab_size;
  const s = new DecodeSession(model, { batch: B, maxLen: S, chunk });
  const prompt = new Int32Array(B * N);
  for (let b = 0; b < B; b++) prompt.set(ids.subarray(b * S, b * S + N), b * N);
  const out = new Float32Array(B * S * V);
  const first = s.prefill(prompt, N, { all: true });
  for (let b = 0; b < B; b++) out.set(first.subarray(b * N * V, (b + 1) * N * V), b * S * V);
  const tok = new Int32Array(B);
  for (let t = N; t < S; t++) {
    for (let b = 0; b < B; b++) tok[b] = ids[b * S + t]!;
    const l = s.step(tok);
    for (let b = 0; b < B; b++) out.set(l.subarray(b * V, (b + 1) * V), (b * S + t) * V);
  }
  return Tensor.fromF32(out, [B, S, V]);
}

describe('engine on each weight storage', () => {
  const B = 2;
  const S = 12;
  const ids = promptIds(B * S, cfg.vocab_size, 7);
  for (const storage of ['f32', 'bf16', 'fp8'] as WeightStorage[]) {
    it(`${storage}: session decode logits equal the model's decodeStep`, () => {
      const model = randomModel(cfg, 11, storage, { mtp: false });
      const kinds = new Set([...model.linears.values()].map((w) => w.kind));
      if (storage === 'fp8') assert.deepEqual([...kinds].sort(), ['f32', 'fp8']);
      else assert.deepEqual([...kinds], [storage]);
      const want = modelDecode(model, ids, B, S, 5);
      const got = sessionDecode(model, ids, B, S, 5, 3);
      const err = relToMax(got, want);
      assert.ok(err <= TOL, `${storage}: ${err.toExponential(3)} > ${TOL}`);
    });
  }

  // issue 12: a bf16 kv_b_proj is read as its bf16 bits in place (2 bytes per weight, no float32
  // copy), with q^C and ctx rounded to bf16 in the engine AND the model's absorbed form; with the
  // switch off (DSV3_KVB_BF16=0) both keep float32 operands and the engine a decoded copy
  for (const on of [true, false]) {
    it(`bf16 kv_b_proj ${on ? 'as bits in place' : 'decoded to float32 (DSV3_KVB_BF16=0)'}: engine equals the model`, () => {
      const was = setAbsorbedKvBBf16(on);
      try {
        const model = randomModel(cfg, 13, 'bf16', { mtp: false });
        const s = new DecodeSession(model, { batch: 1, maxLen: 4, chunk: 1 });
        const H = cfg.num_attention_heads;
        const perLayer = H * (cfg.qk_nope_head_dim + cfg.v_head_dim) * cfg.kv_lora_rank;
        assert.equal(s.engine.memory().decodedKvB, on ? 0 : 4 * perLayer * cfg.num_hidden_layers);
        const a = s.engine.layers[0]!.attn;
        const kvb = model.linears.get('model.layers.0.self_attn.kv_b_proj.weight')!;
        assert.equal(kvb.kind, 'bf16');
        if (on) {
          assert.ok(kvb.kind === 'bf16' && a.ukHeadBits![1]!.buffer === kvb.bits.buffer, 'a view of the weight bits, not a copy');
          assert.equal(a.uvHeadBits![1]!.byteOffset - kvb.bits.byteOffset, 2 * (perLayer / H + cfg.qk_nope_head_dim * cfg.kv_lora_rank));
          assert.equal(a.kvB.length, 0);
        } else assert.equal(a.ukHeadBits, null);
        const want = modelDecode(model, ids, B, S, 5);
        const got = sessionDecode(model, ids, B, S, 5, 3);
        const err = relToMax(got, want);
        assert.ok(err <= TOL, `${err.toExponential(3)} > ${TOL}`);
      } finally {
        setAbsorbedKvBBf16(was);
      }
    });
  }

  it('roundBf16: nearest bf16, ties to even, identity gradient', () => {
    const x = Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -8, -3.14159, 1e-40, 65504.7, 0]);
    const t = Tensor.param(x.slice(), [6]);
    const y = roundBf16(t);
    const d = y.contiguous().f32();
    assert.deepEqual([...d.subarray(0, 2)], [1, 1 + 2 ** -6]); // ties: to even
    for (let i = 0; i < 6; i++) assert.equal(d[i], bf16ToF32(f32ToBf16(x[i]!)));
    backward(sum(y));
    assert.deepEqual(t.grad!.toArray(), [1, 1, 1, 1, 1, 1]);
  });

  it('FP8 storage follows the checkpoint: attention and expert projections only', () => {
    assert.ok(isFp8InCheckpoint('model.layers.3.self_attn.kv_b_proj.weight'));
    assert.ok(isFp8InCheckpoint('model.layers.3.mlp.experts.12.down_proj.weight'));
    assert.ok(isFp8InCheckpoint('model.layers.3.mlp.shared_experts.up_proj.weight'));
    assert.ok(isFp8InCheckpoint('model.layers.0.mlp.gate_proj.weight'));
    assert.ok(!isFp8InCheckpoint('lm_head.weight'));
    assert.ok(!isFp8InCheckpoint('model.layers.3.eh_proj.weight'));
    assert.ok(!isFp8InCheckpoint('model.layers.3.mlp.gate.weight'));
  });
});

describe('decode benchmark protocol', () => {
  const model = randomModel(cfg, 3, 'f32', { mtp: true });
  const o = { prompt: 6, tokens: 10, reps: 1 };

  it('measures tokens/s, a profile that adds up, speculative decoding and prefill', () => {
    const d = measureDecode(model, o);
    assert.ok(d.tokens_per_s > 0 && d.ms_per_token_median > 0 && d.prefill_ms > 0);
    assert.equal(d.ids.length, o.tokens);
    const p = profileDecode(model, o);
    const sum = Object.entries(p).filter(([k]) => k !== 'total').reduce((a, [, v]) => a + v, 0);
    assert.ok(p.total > 0 && Math.abs(sum - p.total) <= 0.01 + 1e-3 * p.total);
    const s = measureSpeculative(model, o, d.ids);
    assert.equal(s.matches_greedy, true);
    assert.ok(s.acceptance_rate >= 0 && s.acceptance_rate <= 1 && s.drafted >= 1);
    const f = measurePrefill(model, { prompt: 20, chunk: 8, reps: 1 });
    assert.ok(f.tokens_per_s > 0);
  });

  it('`dsv3 bench decode` and `dsv3 bench prefill` print one JSON line', () => {
    const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const run = (args: string[]): Record<string, unknown> => JSON.parse(execFileSync(process.execPath, [main, 'bench', ...args, '--config', cfgPath, '--json'], { encoding: 'utf8' }).trim());
    const d = run(['decode', '--weights', 'fp8', '--prompt', '4', '--tokens', '4', '--reps', '1', '--profile', '--speculative']);
    assert.equal(d['bench'], 'decode');
    assert.equal(d['weights'], 'fp8');
    assert.ok((d['tokens_per_s'] as number) > 0 && typeof d['threads'] === 'number' && typeof d['prefill_ms'] === 'number');
    assert.ok(d['phases_ms'] && d['speculative']);
    const p = run(['prefill', '--prompt', '16', '--chunk', '8', '--reps', '1']);
    assert.equal(p['bench'], 'prefill');
    assert.ok((p['tokens_per_s'] as number) > 0);
  });
});
