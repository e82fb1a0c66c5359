/**
 * Issue 12: an FP8 kv_b_proj is read in place by the decode engine (src/inference/mla-fp8-heads.ts:
 * W^UK[h] / W^UV[h] as views of the codes and block scales, Kernels.linearFp8T / linearFp8, no
 * float32 copy) when the heads' row blocks start on 128-row scale blocks (dn = dv = 128 here, as
 * in DeepSeek-V2/V3). The session's prefill + decode logits equal the model's absorbed decodeStep
 * (which multiplies by the dequantised weights) within 2e-5 x max|logits|, batch 2 with a chunked
 * prefill (M > 1 rows per head) and batch 1; with the switch off (DSV3_KVB_FP8=0) the plan decodes
 * the float32 copy as before, and both agree too.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../src/engine/tensor.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { setFp8KvBInPlace } from '../src/inference/mla-fp8-heads.js';
import { promptIds } from '../src/inference/measure.js';
import { randomModel } from '../src/inference/random-model.js';
import { loadModelConfig } from '../src/model/config.js';
import type { DeepseekV3 } from '../src/model/model.js';
import { fixturePath, modelTolerance, relToMax } from './helpers/fixtures.js';

const TOL = modelTolerance();
const base = loadModelConfig(fixturePath('tiny-dense-moe/config.json'));
const cfg = { ...base, num_attention_heads: 2, qk_nope_head_dim: 128, v_head_dim: 128, num_hidden_layers: 2 };

function modelDecode(model: DeepseekV3, ids: Int32Array, B: number, S: number, N: number): Float32Array {
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
  return out;
}

function sessionDecode(s: DecodeSession, V: number, ids: Int32Array, B: number, S: number, N: number): Float32Array {
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
  return out;
}

describe('FP8 kv_b_proj in the decode engine', () => {
  const S = 10;
  for (const on of [true, false]) {
    for (const B of [1, 2]) {
      it(`${on ? 'read in place' : 'decoded to float32 (DSV3_KVB_FP8=0)'}, batch ${B}: engine equals the model`, () => {
        const was = setFp8KvBInPlace(on);
        try {
          const model = randomModel(cfg, 17, 'fp8', { mtp: false });
          const kvb = model.linears.get('model.layers.0.self_attn.kv_b_proj.weight')!;
          assert.equal(kvb.kind, 'fp8');
          const s = new DecodeSession(model, { batch: B, maxLen: S, chunk: 3 });
          const H = cfg.num_attention_heads;
          const perLayer = H * (cfg.qk_nope_head_dim + cfg.v_head_dim) * cfg.kv_lora_rank;
          assert.equal(s.engine.memory().decodedKvB, on ? 0 : 4 * perLayer * cfg.num_hidden_layers);
          const f = s.engine.layers[0]!.attn.kvBFp8;
          if (on) {
            assert.ok(f && kvb.kind === 'fp8');
            assert.equal(f.uvCodes[1]!.buffer, kvb.codes.buffer, 'a view of the codes, not a copy');
            assert.equal(f.uvCodes[1]!.byteOffset - kvb.codes.byteOffset, perLayer / H + cfg.qk_nope_head_dim * cfg.kv_lora_rank);
            assert.equal(f.ukScales[1]!.byteOffset - kvb.scaleInv.byteOffset, 4 * 2 * Math.ceil(cfg.kv_lora_rank / 128));
          } else assert.equal(f, null);
          const ids = promptIds(B * S, cfg.vocab_size, 9);
          const want = Tensor.fromF32(modelDecode(model, ids, B, S, 5), [B, S, cfg.vocab_size]);
          const got = Tensor.fromF32(sessionDecode(s, cfg.vocab_size, ids, B, S, 5), [B, S, cfg.vocab_size]);
          const err = relToMax(got, want);
          assert.ok(err <= TOL, `${err.toExponential(3)} > ${TOL}`);
        } finally {
          setFp8KvBInPlace(was);
        }
      });
    }
  }
});
