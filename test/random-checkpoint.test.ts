/**
 * Random real-shape checkpoints (bench decode/prefill --checkpoint-dtype): the tensor list loads
 * as a model of the config (no missing or extra tensor), FP8 storage holds E4M3 codes + scales
 * where the DeepSeek-V3 release does, the cache is reused when complete and rewritten when not,
 * and `bench memory-bandwidth` reports a positive figure.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { nativeAddon, packageRoot } from '../src/engine/native.js';
import { openCheckpoint } from '../src/io/checkpoint-read.js';
import { ensureRandomCheckpoint, entriesBytes, randomCheckpointEntries } from '../src/inference/random-checkpoint.js';
import { loadModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-randckpt-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const cfg = { ...loadModelConfig(path.join(packageRoot(), 'configs', 'bench-small.json')), num_hidden_layers: 2, num_nextn_predict_layers: 0 };

describe('random checkpoints', () => {
  it('write once, load as the config, reuse the cache; an incomplete one is rewritten', () => {
    const a = ensureRandomCheckpoint(tmp, 'small', cfg, 'fp8', 3);
    assert.equal(a.written, true);
    const ck = openCheckpoint(a.dir);
    assert.equal(ck.totalBytes(), entriesBytes(randomCheckpointEntries(cfg, 'fp8')));
    assert.equal(ck.info('model.layers.1.mlp.experts.0.up_proj.weight').tag, 'F8_E4M3');
    assert.equal(ck.info('model.layers.1.mlp.experts.0.up_proj.weight_scale_inv').tag, 'F32');
    assert.equal(ck.info('lm_head.weight').tag, 'BF16');
    assert.equal(ck.info('model.embed_tokens.weight').tag, 'BF16');
    ck.close();
    const m = DeepseekV3.load(a.dir, { weights: 'bf16', mtp: false, map: true }); // throws on a missing / extra tensor
    assert.equal(m.linears.get('model.layers.0.self_attn.q_a_proj.weight')!.kind, 'fp8');
    const b = ensureRandomCheckpoint(tmp, 'small', cfg, 'fp8', 3);
    assert.deepEqual(b, { dir: a.dir, written: false });
    // a shard of the wrong size (a killed or foreign write) is not reused
    const shard = fs.readdirSync(a.dir).find((f) => f.endsWith('.safetensors'))!;
    fs.truncateSync(path.join(a.dir, shard), 100);
    fs.writeFileSync(path.join(a.dir, '.stale.tmp-1'), 'x');
    const c = ensureRandomCheckpoint(tmp, 'small', cfg, 'fp8', 3);
    assert.equal(c.written, true);
    assert.ok(!fs.existsSync(path.join(a.dir, '.stale.tmp-1')));
    assert.equal(ensureRandomCheckpoint(tmp, 'small', cfg, 'bf16', 3).dir === a.dir, false, 'storage is part of the key');
  });

  it('configs with MTP layers are refused with a clear error', () => {
    assert.throws(() => randomCheckpointEntries({ ...cfg, num_nextn_predict_layers: 1 }, 'bf16'), /num_nextn_predict_layers/);
  });

  it('bench memory-bandwidth prints a positive GB/s per thread count', { skip: !nativeAddon() }, () => {
    const out = execFileSync(process.execPath, [CLI, 'bench', 'memory-bandwidth', '--mb', '64', '--reps', '1', '--threads', '1', '--json'], { encoding: 'utf8' });
    const r = JSON.parse(out.trim()) as { bench: string; threads: number; gb_per_s: number };
    assert.equal(r.bench, 'memory-bandwidth');
    assert.equal(r.threads, 1);
    assert.ok(r.gb_per_s > 0.1 && r.gb_per_s < 10000, String(r.gb_per_s));
  });
});
