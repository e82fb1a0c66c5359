/**
 * The single-process pipeline runtime (src/parallel/executor.ts, stages.ts; docs/DUALPIPE.md §2, §5,
 * §10) on a tiny DeepSeek-V3 (4 layers: dense + 3 MoE, one MoE MTP module): (a) each rank
 * executes exactly its compute list of the golden fixture, (b) per-micro-batch losses and the
 * replica-summed gradients of every parameter equal a plain sequential run on the same
 * micro-batches with the same loss scale, (c) schedule errors are DsvErrors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/data/rng.js';
import { Tensor } from '../src/engine/tensor.js';
import { DsvError } from '../src/errors.js';
import { parseModelConfig } from '../src/model/config.js';
import { RandomParams } from '../src/model/params.js';
import { buildPipelineRanks, PipelineExecutor } from '../src/parallel/executor.js';
import { modelParamSource } from '../src/parallel/replicas.js';
import { ParamRegistry } from '../src/model/param-registry.js';
import { buildSchedule } from '../src/parallel/schedules.js';
import type { PipelineSchedule } from '../src/parallel/schedule-types.js';
import { PipelineStage, stageLayerRanges, type StageLossOptions } from '../src/parallel/stages.js';
import { assertGradsClose, assertLossesClose, sequentialModel, sequentialRun } from './helpers/pipeline-ref.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/dualpipe/schedules/', import.meta.url));
const CFG = parseModelConfig(tinyConfigJson({ num_hidden_layers: 4, vocab_size: 64, max_position_embeddings: 64 }), 'tiny');
const SEED = 7;
const S = 6;
/** Gradient tolerance: max |diff| <= 1e-5 · max |g| per parameter. Both runs do the same float32
 * arithmetic per micro-batch; only the order of summing micro-batch, replica and deferred-W
 * contributions differs (a few ulps of the largest entry), so 1e-5 leaves ~100x margin. */
const GRAD_REL = 1e-5;
/** Losses are computed by the same ops; only the final sum of balance terms is reordered. */
const LOSS_REL = 1e-6;

function tokensFor(rows: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  return Int32Array.from({ length: rows * (S + 1) }, () => rng.nextUint32() % CFG.vocab_size);
}

function fixture(algo: string, ranks: number, mb: number): PipelineSchedule {
  return JSON.parse(readFileSync(`${FIX}${algo}_r${ranks}_mb${mb}.json`, 'utf8')) as PipelineSchedule;
}

const LOSS: StageLossOptions = { mtpLambda: 0.3, balanceAlpha: 0.01, balance: 'aux-free' };

const CASES: [string, number, number, number, StageLossOptions][] = [
  // algo, ranks, micro-batches, rows per micro-batch, loss options
  ['dualpipe', 2, 4, 1, LOSS],
  ['dualpipe', 4, 8, 2, { ...LOSS, lossScale: 1 / 8 }],
  ['dualpipev', 1, 2, 2, LOSS],
  ['dualpipev', 2, 4, 1, { ...LOSS, balance: 'aux-loss' }],
  ['dualpipev', 2, 5, 1, { ...LOSS, lossScale: 1 / 5 }],
  ['1f1b', 2, 4, 1, LOSS],
  ['1f1b', 4, 8, 1, LOSS],
  ['zb1p', 2, 4, 2, { ...LOSS, lossScale: 0.25 }],
  ['zb1p', 4, 8, 1, LOSS],
];

for (const [algo, ranks, n, perMb, o] of CASES) {
  test(`${algo} ${ranks} ranks × ${n} mb: executed ops = fixture, losses and gradients = sequential`, () => {
    const schedule = buildSchedule(algo, ranks, n);
    const rows = n * perMb;
    const tokens = tokensFor(rows, ranks * 100 + n);
    const exec = new PipelineExecutor(schedule, buildPipelineRanks(CFG, schedule, () => new RandomParams(SEED, CFG.initializer_range)));
    const res = exec.run(tokens, rows, o);
    const fix = fixture(algo, ranks, n);
    for (let r = 0; r < ranks; r++) assert.deepStrictEqual(res.executed[r], fix.compute[r], `rank ${r} executed ops`);
    const grads = exec.reduceGradients();
    const ref = sequentialRun(sequentialModel(CFG, SEED), tokens, rows, n, o);
    assertLossesClose(res.losses, ref.losses, LOSS_REL, `${algo} ${ranks}x${n}`);
    const worst = assertGradsClose(grads, ref.grads, GRAD_REL, `${algo} ${ranks}x${n}`);
    if (process.env.DSV3_PIPE_VERBOSE) console.log(`${algo} ${ranks}x${n}: worst gradient diff / max ${worst.toExponential(2)}`);
    assert.deepEqual([...res.loads.keys()].sort(), [...ref.loads.keys()].sort());
    for (const [l, load] of ref.loads) assert.deepEqual(res.loads.get(l), load, `loads of layer ${l}`);
    // every replica now holds the summed gradient (§2.2)
    for (const rk of exec.ranks) for (const [name, p] of rk.params.params) assert.deepEqual(p.grad!.f32(), grads.get(name), `rank ${rk.rank} ${name}`);
  });
}

test('tied embedding and head (tie_word_embeddings): 1F1B replicates the table on the last rank, DualPipe shares it', () => {
  const cfg = parseModelConfig(tinyConfigJson({ num_hidden_layers: 4, vocab_size: 64, max_position_embeddings: 64, tie_word_embeddings: true }), 'tied');
  for (const [algo, ranks, n] of [['1f1b', 4, 4], ['dualpipe', 2, 4]] as const) {
    const schedule = buildSchedule(algo, ranks, n);
    const exec = new PipelineExecutor(schedule, buildPipelineRanks(cfg, schedule, () => new RandomParams(SEED, cfg.initializer_range)));
    const tokens = tokensFor(n, 9);
    const res = exec.run(tokens, n, LOSS);
    const ref = sequentialRun(sequentialModel(cfg, SEED), tokens, n, n, LOSS);
    assertLossesClose(res.losses, ref.losses, LOSS_REL, `tied ${algo}`);
    assertGradsClose(exec.reduceGradients(), ref.grads, GRAD_REL, `tied ${algo}`);
  }
});

test('DualPipe rank 0 shares one embedding tensor between stage 0 and the MTP of the last stage (§2.4)', () => {
  const schedule = buildSchedule('dualpipe', 4, 8);
  const [r0] = buildPipelineRanks(CFG, schedule, () => new RandomParams(SEED, CFG.initializer_range));
  const [c0, c1] = r0!.chunks;
  assert.equal(c0!.stage.index, 0);
  assert.equal(c1!.stage.index, 3);
  assert.ok(c0!.stage.embedTokens !== null && c0!.stage.embedTokens === c1!.stage.mtpEmbed);
  // a rank holds only its stages' layers: stage 0 = layer 0, stage 3 = layer 3 + MTP layer 4
  const layers = [...r0!.params.params.keys()].filter((k) => k.startsWith('model.layers.')).map((k) => Number(k.split('.')[2]));
  assert.deepEqual([...new Set(layers)].sort(), [0, 3, 4]);
});

test('stages cut from a loaded model (modelParamSource) match the sequential run', () => {
  const model = sequentialModel(CFG, 11);
  const schedule = buildSchedule('1f1b', 2, 2);
  const exec = new PipelineExecutor(schedule, buildPipelineRanks(CFG, schedule, () => modelParamSource(model), { split: [3, 1] }));
  const tokens = tokensFor(2, 5);
  const res = exec.run(tokens, 2, LOSS);
  const ref = sequentialRun(sequentialModel(CFG, 11), tokens, 2, 2, LOSS);
  assertLossesClose(res.losses, ref.losses, LOSS_REL, '1f1b from model');
  assertGradsClose(exec.reduceGradients(), ref.grads, GRAD_REL, '1f1b from model');
  assert.equal(model.parameters()[0]!.grad, null, 'the source model is untouched');
});

test('stage split: even by default, explicit counts checked', () => {
  assert.deepEqual(stageLayerRanges(5, 2), [[0, 3], [3, 5]]);
  assert.deepEqual(stageLayerRanges(4, 2, [1, 3]), [[0, 1], [1, 4]]);
  assert.throws(() => stageLayerRanges(2, 4), DsvError);
  assert.throws(() => stageLayerRanges(4, 2, [4, 0]), DsvError);
  assert.throws(() => stageLayerRanges(4, 2, [1, 2]), DsvError);
  assert.throws(() => new PipelineStage(CFG, new ParamRegistry(new RandomParams(1, 0.02)), 2, 2), DsvError);
});

test('a schedule that cannot make progress is reported as a deadlock', () => {
  const good = buildSchedule('1f1b', 2, 1);
  // rank 0 waits for the gradient before it has sent the activation that produces it
  const bad: PipelineSchedule = { ...good, compute: [[good.compute[0]![1]!, good.compute[0]![0]!], good.compute[1]!] };
  const exec = new PipelineExecutor(bad, buildPipelineRanks(CFG, bad, () => new RandomParams(SEED, CFG.initializer_range)));
  assert.throws(() => exec.run(tokensFor(1, 1), 1, LOSS), (e: unknown) => e instanceof DsvError && /deadlocks/.test(e.message) && /rank 0 at op 0 \(B0\)/.test(e.message));
});

test('a W that does not pop the oldest split backward is an error', () => {
  const good = buildSchedule('zb1p', 1, 2); // F0 b0 W0 F1 b1 W1
  const c = good.compute[0]!;
  const bad: PipelineSchedule = { ...good, compute: [[c[0]!, c[1]!, c[3]!, c[4]!, c[5]!, c[2]!]] }; // F0 b0 F1 b1 W1 W0
  const exec = new PipelineExecutor(bad, buildPipelineRanks(CFG, bad, () => new RandomParams(SEED, CFG.initializer_range)));
  assert.throws(() => exec.run(tokensFor(2, 1), 2, LOSS), (e: unknown) => e instanceof DsvError && /oldest queued split backward is \(chunk 0, mb 0\)/.test(e.message));
});

test('batch errors: rows that do not split into the micro-batches, ids out of range', () => {
  const schedule = buildSchedule('1f1b', 1, 2);
  const exec = new PipelineExecutor(schedule, buildPipelineRanks(CFG, schedule, () => new RandomParams(SEED, CFG.initializer_range)));
  assert.throws(() => exec.run(tokensFor(3, 1), 3, LOSS), DsvError);
  const t = tokensFor(2, 1);
  t[3] = CFG.vocab_size;
  assert.throws(() => exec.run(t, 2, LOSS), DsvError);
});

test('split backward b computes the input gradient now and leaves the weight gradients to W', () => {
  const mk = (): PipelineStage => new PipelineStage(CFG, new ParamRegistry(new RandomParams(SEED, CFG.initializer_range)), 1, 2);
  const full = mk();
  const split = mk();
  const mb = { tokens: tokensFor(1, 3), B: 1, S };
  const x = new RandomParams(99, 1).tensor('x', [1, S, CFG.hidden_size], 'normal');
  const leaf = (): Tensor => Tensor.param(x.f32().slice(), x.shape);
  const a = full.backward(full.forward(leaf(), mb, LOSS), null, false);
  const b = split.backward(split.forward(leaf(), mb, LOSS), null, true);
  assert.deepEqual(b.inputGrad!.f32(), a.inputGrad!.f32());
  assert.equal(a.weightGrads.length, 0);
  assert.ok(b.weightGrads.length > 0);
  const headGrad = (s: PipelineStage): Float32Array | undefined => (s.lmHead!.kind === 'f32' ? s.lmHead!.weight.grad?.f32() : undefined);
  assert.equal(headGrad(split), undefined, 'head gradient deferred');
  for (const fn of b.weightGrads) fn();
  assert.deepEqual(headGrad(split), headGrad(full));
});
