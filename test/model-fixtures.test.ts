/**
 * The model against the golden fixtures: `runForward` (what `dsv3 forward` runs) on every model
 * fixture, with the naive and the absorbed MLA path, every expected tensor at the tolerances of
 * tolerances.json; naive and absorbed agree; FP8 dequantisation is bit-exact.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeepseekV3 } from '../src/model/model.js';
import { runForward } from '../src/inference/run-forward.js';
import { denseRows } from '../src/model/weights.js';
import { Tensor } from '../src/engine/tensor.js';
import {
  bitExact,
  compareToExpected,
  fixturePath,
  type ModelFixtureMeta,
  modelTolerance,
  readJson,
  readTensors,
  relToMax,
} from './helpers/fixtures.js';

const FIXTURES = ['tiny-dense-moe', 'tiny-fp8', 'tiny-sharded', 'tiny-v2-routing', 'tiny-v2-greedy'];
const TOL = modelTolerance();

for (const name of FIXTURES) {
  describe(`fixture ${name}`, () => {
    const dir = fixturePath(name);
    const meta = readJson<ModelFixtureMeta>(fixturePath(`${name}/meta.json`));
    const expected = readTensors(fixturePath(`${name}/expected.safetensors`));
    const ids = readTensors(fixturePath(`${name}/inputs.safetensors`))['input_ids']!;
    const model = DeepseekV3.load(dir);
    const hasMtp = model.mtp.length > 0;
    const opts = {
      prefill: meta.decode_prefill,
      mtp: hasMtp,
      greedy: { prompt: meta.greedy_prompt_len, tokens: meta.greedy_new_tokens },
    };
    const outs: Record<string, Record<string, Tensor>> = {};

    it('inputs match meta.json', () => {
      assert.deepEqual(ids.shape, [meta.batch, meta.seq_len]);
      assert.deepEqual(ids.toArray(), meta.input_ids.flat());
    });

    for (const path of ['naive', 'absorbed'] as const) {
      it(`${path} path: every expected tensor within ${TOL} x max|expected|`, () => {
        const got = runForward(model, ids, { ...opts, path });
        outs[path] = got;
        const { errors, failures } = compareToExpected(got, expected, TOL);
        assert.deepEqual(failures, [], failures.join('\n'));
        const worst = Math.max(...Object.values(errors));
        assert.ok(worst <= TOL, `worst ${worst}`);
        // exactly the fixture's tensors (dequant.* aside), with the MoE layers of meta.json
        const want = Object.keys(expected).filter((k) => !k.startsWith('dequant.')).sort();
        assert.deepEqual(Object.keys(got).sort(), want);
        const routed = [...new Set(Object.keys(got).filter((k) => k.startsWith('router.')).map((k) => Number(k.split('.')[2])))];
        assert.deepEqual(routed.sort((a, b) => a - b), meta.moe_layers);
      });
    }

    it('naive and absorbed paths agree', () => {
      const a = outs['naive'];
      const b = outs['absorbed'];
      assert.ok(a && b, 'both paths ran');
      for (const k of Object.keys(a)) {
        if (a[k]!.dtype === 'i32') assert.deepEqual(a[k]!.toArray(), b[k]!.toArray(), k);
        else assert.ok(relToMax(b[k]!, a[k]!) <= TOL, `${k}: ${relToMax(b[k]!, a[k]!)}`);
      }
    });

    if (name === 'tiny-fp8') {
      it('FP8 weights stay codes and dequantise bit-exactly', () => {
        let n = 0;
        for (const [k, exp] of Object.entries(expected)) {
          if (!k.startsWith('dequant.')) continue;
          const w = model.linears.get(k.slice('dequant.'.length));
          assert.ok(w, `no linear ${k}`);
          assert.equal(w.kind, 'fp8');
          assert.ok(bitExact(Tensor.fromF32(denseRows(w), exp.shape), exp), `${k} is not bit-exact`);
          n++;
        }
        assert.ok(n > 0);
      });

      it("weights: 'f32' (dequantised at load) gives the same logits", () => {
        const m32 = DeepseekV3.load(dir, { weights: 'f32' });
        assert.equal(m32.linears.get('model.layers.0.self_attn.o_proj.weight')!.kind, 'f32');
        const got = runForward(m32, ids, { path: 'absorbed' });
        assert.ok(relToMax(got['logits']!, expected['logits']!) <= TOL);
      });
    }
  });
}
