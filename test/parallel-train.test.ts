/**
 * Pipeline-parallel training (src/train/pipeline-trainer.ts, src/parallel/train-pool.ts;
 * docs/DUALPIPE.md §2.2, §10; paper §3.2.1): three optimizer steps on persistent worker ranks equal
 * the sequential trainer's path (forwardLosses + backward per micro-batch, then `applyUpdate`
 * with divisor M) on the same micro-batches: per-step losses, every parameter and every balance
 * bias after each step; all replicas of a parameter are bit-identical to each other and to the
 * main model after each step.
 *
 * Tolerance: parameters within 1e-5 of each tensor's max |value| after each step (biases and
 * losses within 1e-5 relative). Both paths do the same float32 arithmetic per micro-batch; only
 * the order in which gradients are summed over micro-batches, replicas and deferred W closures
 * differs (a few ulps; parallel-executor.test.ts bounds the gradients by 1e-5 of each tensor's
 * max). AdamW's m/(sqrt(v)+eps) amplifies such differences for elements whose gradient is near
 * eps, so parameters differ more than gradients: the worst ratio seen here is ~1.7e-6 (DualPipe,
 * clipping active), ~6x inside the bound (printed with DSV3_PIPE_VERBOSE). Replicas, in
 * contrast, must be (and are) bit-identical: every rank gets the main model's values.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTrainArgs } from '../src/cli/commands/train.js';
import { loadMobyDick } from '../src/data/corpus.js';
import { prepareData } from '../src/data/dataset.js';
import { readMetrics, type StepRecord } from '../src/train/metrics.js';
import { trainPipelined } from '../src/train/pipeline-trainer.js';
import type { TrainOptions } from '../src/train/train-options.js';
import { train } from '../src/train/trainer.js';
import { Rng } from '../src/data/rng.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { buildSchedule } from '../src/parallel/schedules.js';
import { PipelineTrainPool } from '../src/parallel/train-pool.js';
import { lossReport } from '../src/objective/losses.js';
import { AdamW } from '../src/train/optimizer.js';
import { applyPipelineUpdate } from '../src/train/pipeline-trainer.js';
import { applyUpdate, forwardLosses, type BiasEmaStates, type UpdateOptions } from '../src/train/train-step.js';
import { tinyConfigJson, tinyTrainingArgs } from './helpers/tiny-config.js';
import { backward } from '../src/engine/autograd.js';

const CFG = parseModelConfig(tinyConfigJson({ num_hidden_layers: 4, vocab_size: 64, max_position_embeddings: 64 }), 'tiny');
const S = 6;
const B = 2; // sequences per micro-batch
const REL = 1e-5;
const LOSS = { mtpLambda: 0.3, balanceAlpha: 1e-2, balance: 'aux-free' as const };
// clipping active (max norm below the gradients' norm), bias moving, weight decay on
const UPD = (step: number): UpdateOptions => ({ lr: 2e-3 * (step + 1), maxGradNorm: 0.5, balance: 'aux-free', bias: { gamma: 1e-3 } });

function tokensFor(rows: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  return Int32Array.from({ length: rows * (S + 1) }, () => rng.nextUint32() % CFG.vocab_size);
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const x of a) m = Math.max(m, Math.abs(x));
  return m;
}

/** The sequential trainer's step (trainer.ts): unscaled backward per micro-batch, one update / M. */
function sequentialStep(model: DeepseekV3, opt: AdamW, tokens: Int32Array, m: number, u: UpdateOptions, ema: BiasEmaStates): number[] {
  opt.zeroGrad();
  const loads = new Map<number, Int32Array>();
  const losses: number[] = [];
  const w = B * (S + 1);
  for (let j = 0; j < m; j++) {
    const f = forwardLosses(model, tokens.subarray(j * w, (j + 1) * w), LOSS, B);
    losses.push(lossReport(f.terms).total);
    for (const [l, r] of f.routing) {
      const acc = loads.get(l) ?? new Int32Array(r.load.length);
      for (let e = 0; e < acc.length; e++) acc[e]! += r.load[e]!;
      loads.set(l, acc);
    }
    backward(f.terms.total);
  }
  assert.ok(applyUpdate(model, opt, loads, u, ema, m).applied);
  return losses;
}

const CASES: [string, number, number][] = [
  ['dualpipe', 2, 4],
  ['dualpipev', 2, 4],
  ['1f1b', 2, 2],
  ['zb1p', 2, 3],
];

for (const [algo, ranks, m] of CASES) {
  test(`pipeline training: ${algo} ${ranks} ranks × ${m} mb, 3 steps = the sequential trainer; replicas bit-identical`, async () => {
    const seq = DeepseekV3.randomInit(CFG, 3);
    const main = DeepseekV3.randomInit(CFG, 3);
    const seqOpt = new AdamW(seq.parameters(), { lr: 1e-3 });
    const mainOpt = new AdamW(main.parameters(), { lr: 1e-3 });
    const seqEma: BiasEmaStates = {};
    const mainEma: BiasEmaStates = {};
    const pool = await PipelineTrainPool.start(CFG, buildSchedule(algo, ranks, m));
    let worst = 0;
    try {
      const send = (): void => pool.setWeights((name, kind) => (kind === 'param' ? main.params : main.buffers).get(name)!.f32());
      send();
      for (let step = 0; step < 3; step++) {
        const tokens = tokensFor(m * B, 100 * step + ranks);
        const want = sequentialStep(seq, seqOpt, tokens, m, UPD(step), seqEma);
        const res = await pool.step(tokens, m * B, LOSS);
        res.losses.forEach((r, j) => assert.ok(Math.abs(r.total - want[j]!) <= REL * Math.abs(want[j]!), `step ${step} mb ${j}: loss ${r.total} vs ${want[j]}`));
        const u = applyPipelineUpdate(main, mainOpt, res, UPD(step), mainEma, m);
        assert.ok(u.applied && u.clipCoef < 1, `step ${step}: update applied with clipping (coef ${u.clipCoef})`);
        send();
        for (const [name, p] of seq.params) {
          const a = main.params.get(name)!.f32();
          const b = p.f32();
          const mx = maxAbs(b);
          let d = 0;
          for (let i = 0; i < b.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
          worst = Math.max(worst, d / mx);
          assert.ok(d <= REL * mx, `step ${step}: ${name} differs by ${d.toExponential(3)} (max ${mx.toExponential(3)})`);
        }
        for (const [name, b] of seq.buffers) {
          const a = main.buffers.get(name)!.f32();
          b.f32().forEach((x, i) => assert.ok(Math.abs(a[i]! - x) <= REL * Math.max(Math.abs(x), 1e-3), `step ${step}: bias ${name}[${i}] ${a[i]} vs ${x}`));
        }
        // every rank's copy of every parameter and bias = the main model's, bit for bit (§2.2)
        const ranksW = await pool.readWeights();
        const seen = new Set<string>();
        ranksW.forEach((rw, r) => {
          for (const [kind, map] of [['param', rw.params], ['buffer', rw.buffers]] as const) {
            for (const [name, v] of map) {
              seen.add(name);
              const ref = (kind === 'param' ? main.params : main.buffers).get(name)!.f32();
              assert.ok(Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(ref.buffer, ref.byteOffset, ref.byteLength)), `step ${step}: rank ${r} ${name}`);
            }
          }
        });
        assert.equal(seen.size, main.params.size + main.buffers.size, 'the ranks together hold every parameter and bias');
      }
    } finally {
      await pool.close();
    }
    if (process.env.DSV3_PIPE_VERBOSE) console.log(`${algo} ${ranks}x${m}: worst parameter diff / max ${worst.toExponential(2)}`);
  });
}

test('trainPipelined (dualpipe, 2 ranks, 4 mb) = train with --grad-accum 4: losses, metrics, checkpoint', async () => {
  const cfg = parseModelConfig(tinyConfigJson(), 'tiny'); // 2 layers: stage 0 = dense, stage 1 = MoE + MTP
  const docs = loadMobyDick().documents.slice(3, 5).map((d) => d.slice(0, 4000));
  const prepared = prepareData({ corpus: { name: 'moby-slice', documents: docs }, vocabSize: 320, cacheDir: null, valFraction: 0.1, seqLen: 16 });
  const a = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-pt-seq-'));
  const b = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-pt-pipe-'));
  try {
    const base: TrainOptions = {
      model: cfg, steps: 3, batch: 1, seq: 16, lr: 3e-3, warmup: 1, seed: 4, balance: 'aux-free', balanceAlpha: 1e-4, bias: { gamma: 1e-3 },
      mtpLambda: 0.3, evalEvery: 3, evalBatches: 1, ckptEvery: 0, out: a, quiet: true, prepared,
    };
    const seqRun = train({ ...base, gradAccum: 4 });
    const pipeRun = await trainPipelined({ ...base, out: b, pipeline: { algo: 'dualpipe', ranks: 2 } });
    assert.equal(pipeRun.status, 'done');
    assert.equal(pipeRun.losses.length, 3);
    pipeRun.losses.forEach((l, i) => assert.ok(Math.abs(l - seqRun.losses[i]!) <= REL * Math.abs(seqRun.losses[i]!), `step ${i + 1}: ${l} vs ${seqRun.losses[i]}`));
    const recs = readMetrics(path.join(b, 'metrics.jsonl'));
    const steps = recs.filter((r): r is StepRecord => r.type === 'step');
    assert.deepEqual(steps.map((r) => r.step), [1, 2, 3]);
    assert.equal(steps[0]!.layers['1']!.load.reduce((x, y) => x + y, 0), 4 * 16 * 2, 'loads of the 4 micro-batches of 1x16 tokens, top-2');
    assert.ok(recs.some((r) => r.type === 'eval'));
    const run = JSON.parse(fs.readFileSync(path.join(b, 'run.json'), 'utf8')) as { grad_accum: number; pipeline: unknown };
    assert.deepEqual(run.pipeline, { algo: 'dualpipe', ranks: 2, microbatches: 4 });
    assert.equal(run.grad_accum, 4);
    const ms = DeepseekV3.load(path.join(a, 'checkpoint-3'));
    const mp = DeepseekV3.load(path.join(b, 'checkpoint-3'));
    for (const [name, p] of ms.params) {
      const x = p.f32();
      const y = mp.params.get(name)!.f32();
      const mx = maxAbs(x);
      let d = 0;
      for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
      assert.ok(d <= REL * mx, `${name}: ${d} vs max ${mx}`);
    }
  } finally {
    fs.rmSync(a, { recursive: true, force: true });
    fs.rmSync(b, { recursive: true, force: true });
  }
});

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

test('dsv3 train --pipeline dualpipe --pp 2: a run whose checkpoint samples and resumes', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-pt-cli-'));
  const dsv3 = (args: string[]): { status: number | null; stdout: string; stderr: string } => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  try {
    const run = path.join(dir, 'run');
    const args = ['train', ...tinyTrainingArgs(dir), '--batch', '1', '--seq', '16',
      '--eval-every', '0', '--ckpt-every', '2', '--out', run, '--pipeline', 'dualpipe', '--pp', '2'];
    const t = dsv3([...args, '--steps', '2']);
    assert.equal(t.status, 0, t.stderr);
    const res = JSON.parse(t.stdout.trim()) as { status: string; step: number; final_loss: number; checkpoint: string };
    assert.equal(res.status, 'done');
    assert.equal(res.step, 2);
    assert.ok(Number.isFinite(res.final_loss));
    assert.ok(fs.existsSync(path.join(run, 'checkpoint-2', 'model.safetensors')));
    assert.equal(DeepseekV3.load(path.join(run, 'checkpoint-2')).params.size, DeepseekV3.randomInit(parseModelConfig(tinyConfigJson()), 0).params.size);
    const s = dsv3(['sample', '--model', run, '--prompt', 'The whale', '--max-new', '4', '--temperature', '0']);
    assert.equal(s.status, 0, s.stderr);
    assert.ok(s.stdout.startsWith('The whale'));
    const r = dsv3([...args, '--steps', '3', '--resume']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout.trim()) as { step: number }).step, 3);
    assert.match(r.stderr, /resumed from .*checkpoint-2 at step 2/);
    const bad = dsv3([...args, '--steps', '1', '--pp', '3', '--out', path.join(dir, 'bad')]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--pipeline dualpipe --pp 3: DualPipe needs an even number of ranks >= 2, got 3/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dsv3 train --pipeline flags: defaults and clear errors for illegal combinations', () => {
  const o = parseTrainArgs(['--pipeline', 'dualpipe', '--pp', '4']);
  assert.deepEqual(o.pipeline, { algo: 'dualpipe', ranks: 4, threads: 1, microbatches: 8 });
  assert.equal(parseTrainArgs(['--pipeline', 'dualpipev', '--pp', '2']).pipeline!.microbatches, 4);
  assert.equal(parseTrainArgs(['--pipeline', '1f1b', '--pp', '3']).pipeline!.microbatches, 3);
  assert.equal(parseTrainArgs(['--pipeline', 'zb1p', '--pp', '2', '--microbatches', '5']).pipeline!.microbatches, 5);
  assert.equal(parseTrainArgs([]).pipeline, undefined);
  assert.throws(() => parseTrainArgs(['--pipeline', 'gpipe']), /--pipeline must be one of dualpipe, dualpipev, 1f1b, zb1p, got 'gpipe'/);
  assert.throws(() => parseTrainArgs(['--pp', '2']), /--pp needs --pipeline/);
  assert.throws(() => parseTrainArgs(['--pipeline', 'dualpipe', '--pp', '2', '--microbatches', '3']), /--microbatches 3: .*DualPipe/);
  assert.throws(() => parseTrainArgs(['--pipeline', 'dualpipev', '--pp', '2', '--microbatches', '3']), /--pp 2 --microbatches 3: .*DualPipeV/);
  assert.throws(() => parseTrainArgs(['--pipeline', '1f1b', '--grad-accum', '2']), /--grad-accum 2 cannot be combined with --pipeline 1f1b/);
  assert.throws(() => parseTrainArgs(['--pipeline', '1f1b', '--fp8']), /--fp8 cannot be combined/);
  assert.throws(() => parseTrainArgs(['--pipeline', '1f1b', '--batch-warmup', '3']), /--batch-warmup cannot be combined/);
});
