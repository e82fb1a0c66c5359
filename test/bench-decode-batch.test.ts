/**
 * The batched decode benchmark protocol (src/inference/measure-batch.ts, `dsv3 bench decode
 * --batch N`): sequence 0 of the batch is the prompt `measureDecode` uses, so its greedy ids must
 * equal the batch-1 benchmark's; every other sequence equals generate() alone; the CLI prints one
 * JSON line with aggregate and per-sequence tokens/s.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../src/engine/native.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate } from '../src/inference/generate.js';
import { measureDecode, promptIds } from '../src/inference/measure.js';
import { measureBatchDecode, profileBatchDecode } from '../src/inference/measure-batch.js';
import { randomModel } from '../src/inference/random-model.js';
import { loadModelConfig } from '../src/model/config.js';
import { fixturePath } from './helpers/fixtures.js';

const cfgPath = fixturePath('tiny-dense-moe/config.json');
const cfg = loadModelConfig(cfgPath);

describe('batched decode benchmark protocol', () => {
  const model = randomModel(cfg, 3, 'f32');
  const o = { prompt: 6, tokens: 10, reps: 1, batch: 3 };

  it('decodes every sequence as generate() alone would, and reports rates', () => {
    const b = measureBatchDecode(model, o);
    assert.equal(b.batch, 3);
    assert.ok(b.tokens_per_s > 0 && b.ms_per_step_median > 0 && b.prefill_ms > 0);
    assert.ok(Math.abs(b.per_sequence_tokens_per_s * 3 - b.tokens_per_s) <= 0.2);
    assert.deepEqual(Array.from(b.ids[0]!), Array.from(measureDecode(model, o).ids), 'sequence 0 is the batch-1 benchmark');
    for (let s = 1; s < 3; s++) {
      const p = promptIds(o.prompt + s, cfg.vocab_size, 1 + 7919 * s);
      const g = generate(new DecodeSession(model, { maxLen: p.length + o.tokens + 1 }), p, p.length, { maxNew: o.tokens + 1 });
      assert.deepEqual(Array.from(b.ids[s]!), g.tokens[0]!.slice(0, o.tokens), `sequence ${s}`);
    }
    for (const clock of ['wall', 'cpu'] as const) {
      const prof = profileBatchDecode(model, o, clock);
      const sum = Object.entries(prof).filter(([k]) => k !== 'total').reduce((a, [, v]) => a + v, 0);
      assert.ok(prof.total > 0 && Math.abs(sum - prof.total) <= 0.01 + 1e-3 * prof.total, clock);
    }
  });

  it('on configs/bench-small.json (the bar\'s model) batch 8 gives every sequence the ids it gets alone', () => {
    // the M-row kernels the bar measures (8-row narrow GEMMs of gemm_rows_tile.c, moeRows, the
    // batched attention) on the real shapes: d 256, k = 128 / 256 / 768, vocab 4096
    const big = randomModel(loadModelConfig(join(packageRoot(), 'configs/bench-small.json')), 1, 'f32');
    const ob = { prompt: 32, tokens: 12, reps: 1, batch: 8 };
    const b = measureBatchDecode(big, ob);
    for (let s = 0; s < ob.batch; s++) {
      const p = promptIds(ob.prompt + s, big.cfg.vocab_size, 1 + 7919 * s);
      const g = generate(new DecodeSession(big, { maxLen: p.length + ob.tokens + 1 }), p, p.length, { maxNew: ob.tokens + 1 });
      assert.deepEqual(Array.from(b.ids[s]!), g.tokens[0]!.slice(0, ob.tokens), `sequence ${s}`);
    }
  });

  it('`dsv3 bench decode --batch N` prints one JSON line; --batch with --speculative is refused', () => {
    const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const args = ['bench', 'decode', '--config', cfgPath, '--prompt', '4', '--tokens', '4', '--reps', '1', '--json'];
    const d = JSON.parse(execFileSync(process.execPath, [main, ...args, '--batch', '4', '--weights', 'bf16'], { encoding: 'utf8' }).trim()) as Record<string, unknown>;
    assert.equal(d['bench'], 'decode');
    assert.equal(d['batch'], 4);
    assert.equal(d['weights'], 'bf16');
    assert.ok((d['tokens_per_s'] as number) > 0 && (d['per_sequence_tokens_per_s'] as number) > 0);
    assert.throws(() => execFileSync(process.execPath, [main, ...args, '--batch', '2', '--speculative'], { encoding: 'utf8', stdio: 'pipe' }),
      (e: { status: number; stderr: string }) => e.status === 2 && /--batch cannot be combined/.test(e.stderr));
  });
});
