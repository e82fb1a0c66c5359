/**
 * The worker-thread pipeline runtime (src/parallel/workers.ts, pipeline-worker.ts; docs/DUALPIPE.md
 * §5.4, §10): one worker per rank, tensors over MessagePorts. Same checks as the single-process
 * executor: executed ops = the fixture's compute lists, losses and replica-summed gradients =
 * the sequential run (and bit-identical to the single-process executor, which does the same
 * arithmetic in the same order per rank), deadlocks reported, parameters read from a checkpoint.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/data/rng.js';
import { DsvError } from '../src/errors.js';
import { writeShardedCheckpoint } from '../src/io/checkpoint-write.js';
import { configToJson, parseModelConfig } from '../src/model/config.js';
import { RandomParams } from '../src/model/params.js';
import { buildPipelineRanks, PipelineExecutor } from '../src/parallel/executor.js';
import { buildSchedule } from '../src/parallel/schedules.js';
import type { PipelineSchedule } from '../src/parallel/schedule-types.js';
import type { StageLossOptions } from '../src/parallel/stages.js';
import { runPipelineWorkers } from '../src/parallel/workers.js';
import { assertGradsClose, assertLossesClose, sequentialModel, sequentialRun } from './helpers/pipeline-ref.js';
import { tinyConfigJson } from './helpers/tiny-config.js';
import { checkpointTensors } from '../src/model/checkpoint-layout.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/dualpipe/schedules/', import.meta.url));
const CFG = parseModelConfig(tinyConfigJson({ num_hidden_layers: 4, vocab_size: 64, max_position_embeddings: 64 }), 'tiny');
const SEED = 7;
const S = 6;
const GRAD_REL = 1e-5; // as parallel-executor.test.ts
const LOSS_REL = 1e-6;
const LOSS: StageLossOptions = { mtpLambda: 0.3, balanceAlpha: 0.01, balance: 'aux-free' };

function tokensFor(rows: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  return Int32Array.from({ length: rows * (S + 1) }, () => rng.nextUint32() % CFG.vocab_size);
}

const CASES: [string, number, number, number][] = [
  ['dualpipe', 4, 8, 1],
  ['dualpipev', 2, 5, 1],
  ['zb1p', 4, 8, 1],
  ['1f1b', 2, 4, 2],
];

for (const [algo, ranks, n, perMb] of CASES) {
  test(`workers: ${algo} ${ranks} ranks × ${n} mb match the fixture, the sequential run and the single-process executor`, async () => {
    const schedule = buildSchedule(algo, ranks, n);
    const rows = n * perMb;
    const tokens = tokensFor(rows, ranks * 100 + n);
    const o = { ...LOSS, lossScale: 1 / n };
    const res = await runPipelineWorkers(CFG, schedule, { kind: 'random', seed: SEED }, tokens, rows, o);
    const fix = JSON.parse(readFileSync(`${FIX}${algo}_r${ranks}_mb${n}.json`, 'utf8')) as PipelineSchedule;
    for (let r = 0; r < ranks; r++) assert.deepStrictEqual(res.executed[r], fix.compute[r], `rank ${r} executed ops`);
    const ref = sequentialRun(sequentialModel(CFG, SEED), tokens, rows, n, o);
    assertLossesClose(res.losses, ref.losses, LOSS_REL, `workers ${algo}`);
    assertGradsClose(res.grads, ref.grads, GRAD_REL, `workers ${algo}`);
    for (const [l, load] of ref.loads) assert.deepEqual(res.loads.get(l), load, `loads of layer ${l}`);
    const exec = new PipelineExecutor(schedule, buildPipelineRanks(CFG, schedule, () => new RandomParams(SEED, CFG.initializer_range)));
    const single = exec.run(tokens, rows, o);
    const grads = exec.reduceGradients();
    for (const [name, g] of grads) assert.deepEqual(res.grads.get(name), g, `${name}: workers vs single process`);
    assert.deepEqual(res.losses.map((l) => l.lm), single.losses.map((l) => l.lm));
  });
}

test('workers: a schedule that cannot make progress is reported as a deadlock', async () => {
  const good = buildSchedule('1f1b', 2, 1);
  const bad: PipelineSchedule = { ...good, compute: [[good.compute[0]![1]!, good.compute[0]![0]!], good.compute[1]!] };
  await assert.rejects(runPipelineWorkers(CFG, bad, { kind: 'random', seed: SEED }, tokensFor(1, 1), 1, LOSS), (e: unknown) => e instanceof DsvError && /deadlocks on workers/.test(e.message));
});

test('workers: a rank error is a DsvError naming the rank', async () => {
  const good = buildSchedule('zb1p', 1, 2);
  const c = good.compute[0]!;
  const bad: PipelineSchedule = { ...good, compute: [[c[0]!, c[1]!, c[3]!, c[4]!, c[5]!, c[2]!]] };
  await assert.rejects(runPipelineWorkers(CFG, bad, { kind: 'random', seed: SEED }, tokensFor(2, 1), 2, LOSS), (e: unknown) => e instanceof DsvError && /pipeline rank 0: .*oldest queued split backward/.test(e.message));
});

test('workers: each rank reads its own stages from a checkpoint directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dsv3-pipe-'));
  try {
    const model = sequentialModel(CFG, 21);
    const tensors: Record<string, { dtype: 'f32'; shape: readonly number[]; data: Float32Array }> = {};
    for (const [name, t] of checkpointTensors(model)) tensors[name] = { dtype: 'f32', shape: t.shape, data: t.contiguous().f32() };
    writeShardedCheckpoint(dir, tensors);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(configToJson(CFG)));
    const schedule = buildSchedule('dualpipev', 2, 4);
    const tokens = tokensFor(4, 3);
    const res = await runPipelineWorkers(CFG, schedule, { kind: 'checkpoint', dir }, tokens, 4, LOSS);
    const ref = sequentialRun(sequentialModel(CFG, 21), tokens, 4, 4, LOSS);
    assertLossesClose(res.losses, ref.losses, LOSS_REL, 'checkpoint workers');
    assertGradsClose(res.grads, ref.grads, GRAD_REL, 'checkpoint workers');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
