import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadMobyDick } from '../src/data/corpus.js';
import { prepareData, type PreparedData } from '../src/data/dataset.js';
import { parseModelConfig, type ModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { latestCheckpoint, loadTrainerState } from '../src/train/run-checkpoints.js';
import { readMetrics, type StepRecord } from '../src/train/metrics.js';
import type { TrainOptions } from '../src/train/train-options.js';
import { train } from '../src/train/trainer.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

/** A tiny DeepSeek-V3 config: 2 layers (dense + MoE), 8 experts in 2 groups, one MTP module. */
const TINY: Record<string, unknown> = tinyConfigJson();

let cached: PreparedData | null = null;
/** A small slice of Moby-Dick with a 320-token BPE tokenizer (no disk cache). */
function tinyData(): PreparedData {
  if (cached) return cached;
  const docs = loadMobyDick().documents.slice(3, 6).map((d) => d.slice(0, 6000));
  cached = prepareData({ corpus: { name: 'moby-slice', documents: docs }, vocabSize: 320, cacheDir: null, valFraction: 0.1, seqLen: 16 });
  return cached;
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-train-'));
}

function opts(out: string, over: Partial<TrainOptions> = {}): TrainOptions {
  const model: ModelConfig = parseModelConfig(TINY, 'tiny');
  return {
    model, steps: 6, batch: 2, seq: 16, gradAccum: 1, lr: 3e-3, warmup: 2, seed: 5, balance: 'aux-free', balanceAlpha: 1e-4,
    bias: { gamma: 1e-3, emaBeta: 0.5 }, mtpLambda: 0.3, mtpLambdaLate: 0.1, mtpSwitchStep: 4, evalEvery: 3, evalBatches: 1,
    ckptEvery: 3, out, quiet: true, prepared: tinyData(), ...over,
  };
}

test('resume is bit-exact: N steps + resume + M steps = N + M uninterrupted (grad accumulation, bias EMA)', () => {
  const a = tmpDir();
  const b = tmpDir();
  try {
    const full = train(opts(a, { gradAccum: 2 }));
    assert.equal(full.status, 'done');
    assert.equal(full.losses.length, 6);
    const first = train(opts(b, { gradAccum: 2, steps: 3 }));
    assert.equal(first.step, 3);
    const rest = train(opts(b, { gradAccum: 2, resume: true }));
    assert.equal(rest.step, 6);
    assert.deepEqual([...first.losses, ...rest.losses], full.losses, 'loss sequences differ');
    // identical final weights, biases and optimizer moments
    for (const f of ['model.safetensors', 'trainer_state/optimizer.safetensors']) {
      assert.ok(fs.readFileSync(path.join(a, 'checkpoint-6', f)).equals(fs.readFileSync(path.join(b, 'checkpoint-6', f))), f);
    }
    // metrics: one step record per step, eval records, per-layer loads / MaxVio / bias
    const steps = readMetrics(path.join(b, 'metrics.jsonl')).filter((r): r is StepRecord => r.type === 'step');
    assert.deepEqual(steps.map((s) => s.step), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(steps.map((s) => s.loss), full.losses);
    assert.deepEqual(Object.keys(steps[0]!.layers).sort(), ['1', '2']);
    assert.equal(steps[0]!.layers['1']!.load.length, 8);
    assert.equal(steps[0]!.layers['1']!.load.reduce((x, y) => x + y, 0), 2 * 2 * 16 * 2, 'loads summed over micro-batches');
    assert.equal(steps[4]!.mtp_lambda, 0.1);
    assert.ok(readMetrics(path.join(b, 'metrics.jsonl')).some((r) => r.type === 'eval'));
    // the checkpoint is a loadable HF-layout model
    const ck = latestCheckpoint(b)!;
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'generation_config.json']) assert.ok(fs.existsSync(path.join(ck, f)), f);
    const m = DeepseekV3.load(ck);
    assert.equal(m.parameters().length, DeepseekV3.randomInit(parseModelConfig(TINY), 0).parameters().length);
    assert.equal(loadTrainerState(ck).optimizer.step, 6);
  } finally {
    fs.rmSync(a, { recursive: true, force: true });
    fs.rmSync(b, { recursive: true, force: true });
  }
});

test('resume is bit-exact with BF16 AdamW moments and the proportional bias update', () => {
  const a = tmpDir();
  const b = tmpDir();
  try {
    const o = { steps: 4, momentDtype: 'bf16' as const, bias: { gamma: 1e-2, mode: 'proportional' as const, bounds: [-0.5, 0.5] as [number, number] }, evalEvery: 0, ckptEvery: 2 };
    const full = train(opts(a, o));
    const first = train(opts(b, { ...o, steps: 2 }));
    const rest = train(opts(b, { ...o, resume: true }));
    assert.deepEqual([...first.losses, ...rest.losses], full.losses);
    assert.ok(fs.readFileSync(path.join(a, 'checkpoint-4', 'model.safetensors')).equals(fs.readFileSync(path.join(b, 'checkpoint-4', 'model.safetensors'))));
    assert.equal(loadTrainerState(path.join(b, 'checkpoint-4')).optimizer.momentDtype, 'bf16');
  } finally {
    fs.rmSync(a, { recursive: true, force: true });
    fs.rmSync(b, { recursive: true, force: true });
  }
});

test('gradient accumulation: 2 micro-batches of B equal one batch of 2B', () => {
  const a = tmpDir();
  const b = tmpDir();
  try {
    const acc = train(opts(a, { batch: 2, gradAccum: 2, steps: 3, evalEvery: 0, ckptEvery: 0 }));
    const big = train(opts(b, { batch: 4, gradAccum: 1, steps: 3, evalEvery: 0, ckptEvery: 0 }));
    acc.losses.forEach((l, i) => assert.ok(Math.abs(l - big.losses[i]!) <= 1e-5 * Math.abs(l), `step ${i}: ${l} vs ${big.losses[i]}`));
    // batch-size warmup: 1, 1, 2, 3, 3 micro-batches (of 2x16 tokens, top-2) per step
    const c = tmpDir();
    try {
      train(opts(c, { batch: 2, gradAccum: 3, batchWarmup: 3, steps: 5, evalEvery: 0, ckptEvery: 0 }));
      const recs = readMetrics(path.join(c, 'metrics.jsonl')).filter((r): r is StepRecord => r.type === 'step');
      assert.deepEqual(recs.map((r) => r.layers['1']!.load.reduce((x, y) => x + y, 0) / (2 * 16 * 2)), [1, 1, 2, 3, 3]);
    } finally {
      fs.rmSync(c, { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(a, { recursive: true, force: true });
    fs.rmSync(b, { recursive: true, force: true });
  }
});

test('non-finite steps are skipped and reported; K in a row stop training with the last good checkpoint intact', () => {
  const dir = tmpDir();
  try {
    const inject = (s: number): 'loss' | 'grad' | null => (s === 1 ? 'grad' : s >= 4 ? 'loss' : null);
    const r = train(opts(dir, { steps: 20, ckptEvery: 2, evalEvery: 0, maxNonFinite: 3, inject }));
    assert.equal(r.status, 'diverged');
    assert.equal(r.step, 7);
    assert.match(r.message, /3 consecutive steps with non-finite loss or gradients/);
    assert.match(r.message, /checkpoint-4/);
    assert.ok(Number.isNaN(r.losses[1]!) && Number.isFinite(r.losses[2]!), 'step 2 skipped, step 3 ran');
    const recs = readMetrics(path.join(dir, 'metrics.jsonl'));
    const skips = recs.filter((x) => x.type === 'skip');
    assert.deepEqual(skips.map((x) => x.step), [2, 5, 6, 7]);
    assert.match(JSON.stringify(skips[0]), /non-finite gradients/);
    assert.match(JSON.stringify(skips[1]), /non-finite loss/);
    const ck = latestCheckpoint(dir)!;
    assert.equal(path.basename(ck), 'checkpoint-4');
    const st = loadTrainerState(ck);
    assert.equal(st.state['step'], 4);
    assert.equal(st.optimizer.step, 3, 'the skipped step made no optimizer update');
    // the good checkpoint still resumes
    const again = train(opts(dir, { steps: 5, resume: true, evalEvery: 0, ckptEvery: 0 }));
    assert.equal(again.status, 'done');
    assert.ok(Number.isFinite(again.losses[0]!));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('training lowers the loss on a tiny model (aux-loss baseline and no balancing run too)', () => {
  const dir = tmpDir();
  try {
    const r = train(opts(dir, { steps: 30, batch: 4, lr: 1e-2, warmup: 3, evalEvery: 0, ckptEvery: 0 }));
    const head = r.losses.slice(0, 3).reduce((x, y) => x + y) / 3;
    const tail = r.losses.slice(-3).reduce((x, y) => x + y) / 3;
    assert.ok(tail < head - 0.5, `loss ${head} -> ${tail}`);
    for (const balance of ['aux-loss', 'none'] as const) {
      const d = tmpDir();
      try {
        const x = train(opts(d, { steps: 2, balance, balanceAlpha: balance === 'none' ? 0 : 0.01, evalEvery: 0, ckptEvery: 0 }));
        assert.equal(x.status, 'done');
        const rec = readMetrics(path.join(d, 'metrics.jsonl')).filter((q): q is StepRecord => q.type === 'step');
        assert.ok(rec[1]!.layers['1']!.bias.every((v) => v === 0), `${balance}: no bias update`);
        if (balance === 'none') assert.equal(rec[0]!.balance, 0);
        else assert.ok(rec[0]!.balance > 0);
      } finally {
        fs.rmSync(d, { recursive: true, force: true });
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
