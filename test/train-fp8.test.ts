// FP8 mixed-precision training (paper §3.3 / Figure 6, docs/SPEC.md §2; src/model/fp8-mode.ts): which
// ops a training step runs (every covered Linear through an FP8 op, the embedding, output head,
// MoE gate and norms not), losses and gradients close to but not equal to float32, the trainer
// (run.json / metrics record it, resume stays bit-exact), `dsv3 train --fp8` and
// `dsv3 bench train --fp8`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadMobyDick } from '../src/data/corpus.js';
import { prepareData, type PreparedData } from '../src/data/dataset.js';
import { BufferArena } from '../src/engine/arena.js';
import { withArena } from '../src/engine/active-arena.js';
import { Tensor } from '../src/engine/tensor.js';
import { parseTrainArgs } from '../src/cli/commands/train.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { lossReport } from '../src/objective/losses.js';
import { readMetrics, type StepRecord } from '../src/train/metrics.js';
import { AdamW } from '../src/train/optimizer.js';
import { applyUpdate, forwardLosses } from '../src/train/train-step.js';
import type { TrainOptions } from '../src/train/train-options.js';
import { train } from '../src/train/trainer.js';
import { withRecipe } from '../src/train/recipe.js';
import { rng } from './helpers/random.js';
import { tinyConfigJson, tinyTrainingArgs } from './helpers/tiny-config.js';
import { backward, type GradTarget } from '../src/engine/autograd.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const CFG = parseModelConfig(tinyConfigJson(), 'tiny');
const FP8_OPS = new Set(['fp8TrainingLinear', 'fp8GroupedExperts']);
const [B, S] = [2, 24];

function tokens(seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: B * (S + 1) }, () => Math.floor(r() * CFG.vocab_size));
}

/** Parameter name -> the names of the graph ops that consume it, from the loss's recorded graph. */
function consumers(root: Tensor): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const seen = new Set<object>();
  const stack: GradTarget[] = [root.node!];
  while (stack.length) {
    const node = stack.pop()!;
    if (node instanceof Tensor || seen.has(node)) continue;
    seen.add(node);
    for (const t of node.inputs) {
      if (!t) continue;
      if (!(t instanceof Tensor)) stack.push(t); // a producer's node
      else if (t.name) {
        if (!out.has(t.name)) out.set(t.name, new Set());
        out.get(t.name)!.add(node.name);
      }
    }
  }
  return out;
}

const lossOpts = { mtpLambda: 0.3, balanceAlpha: 1e-4, balance: 'aux-free' } as const;

test('FP8 step: every covered Linear runs an FP8 op; embedding, head (bf16 as in bf16 mode), gate and norms do not', () => {
  const model = DeepseekV3.randomInit(CFG, 3);
  const covered = [...model.linears.keys()].filter((n) => n !== 'lm_head.weight');
  // the recipe's Linears: MLA projections, the dense FFN, routed and shared experts, MTP eh_proj
  for (const re of [/q_a_proj/, /q_b_proj/, /kv_a_proj_with_mqa/, /kv_b_proj/, /o_proj/, /layers\.0\.mlp\.gate_proj/, /experts\.7\.down_proj/, /shared_experts\.up_proj/, /eh_proj/]) {
    assert.ok(covered.some((n) => re.test(n)), String(re));
  }
  for (const logits of [false, true]) {
    const c = consumers(forwardLosses(model, tokens(1), { ...lossOpts, fp8: true, logits }, B).terms.total);
    for (const n of covered) {
      const ops = [...(c.get(n) ?? [])];
      assert.ok(ops.length > 0 && ops.every((op) => FP8_OPS.has(op)), `${n}: ${ops.join(', ')}`);
    }
    for (const [n, ops] of c) if (!covered.includes(n)) assert.ok(![...ops].some((op) => FP8_OPS.has(op)), `${n} must stay high precision: ${[...ops].join(', ')}`);
    // the head is not an FP8 GEMM: it runs as under --precision bf16 (bf16 operands, float32 accumulation)
    assert.deepEqual([...c.get('lm_head.weight')!], [logits ? 'bf16Linear' : 'linearCrossEntropy']);
    assert.deepEqual([...c.get('model.embed_tokens.weight')!], ['embedding']);
    assert.deepEqual([...c.get('model.layers.1.mlp.gate.weight')!], ['linear']);
    assert.deepEqual([...c.get('model.layers.2.mlp.gate.weight')!], ['linear'], 'the MTP layer\'s gate');
    assert.deepEqual([...c.get('model.norm.weight')!], ['rmsNorm']);
  }
  // off (the default): no FP8 op anywhere, and fp8: false is the default bit for bit
  const off = forwardLosses(model, tokens(1), lossOpts, B);
  for (const [n, ops] of consumers(off.terms.total)) assert.ok(![...ops].some((op) => FP8_OPS.has(op)), n);
  assert.equal(forwardLosses(model, tokens(1), { ...lossOpts, fp8: false }, B).terms.total.item(), off.terms.total.item());
});

test('FP8 step: losses finite and close to float32 (not equal); covered weights get different but close gradients', () => {
  const run = (fp8: boolean): { loss: number; grads: Map<string, Float32Array> } => {
    const model = DeepseekV3.randomInit(CFG, 4);
    const f = forwardLosses(model, tokens(2), { ...lossOpts, fp8 }, B);
    backward(f.terms.total);
    const grads = new Map<string, Float32Array>();
    for (const [n, p] of model.params) grads.set(n, p.grad?.f32().slice() ?? new Float32Array(p.size));
    return { loss: lossReport(f.terms).total, grads };
  };
  const f32 = run(false);
  const fp8 = run(true);
  assert.ok(Number.isFinite(fp8.loss));
  const rel = Math.abs(fp8.loss - f32.loss) / f32.loss;
  assert.ok(rel > 0 && rel < 2.5e-3, `relative loss difference ${rel}`);
  let dot = 0;
  let n8 = 0;
  let n32 = 0;
  const model = DeepseekV3.randomInit(CFG, 4);
  for (const name of model.linears.keys()) {
    if (name === 'lm_head.weight') continue;
    const a = fp8.grads.get(name)!;
    const b = f32.grads.get(name)!;
    if (b.every((v) => v === 0)) continue; // an expert that got no token
    assert.notDeepEqual(a, b, `${name}: FP8 gradient`);
    for (let i = 0; i < a.length; i++) {
      dot += a[i]! * b[i]!;
      n8 += a[i]! * a[i]!;
      n32 += b[i]! * b[i]!;
    }
  }
  const cos = dot / Math.sqrt(n8 * n32);
  assert.ok(cos > 0.99, `cosine of FP8 and float32 gradients of the covered weights: ${cos}`);
});

test('FP8 steps in a poisoning arena equal plain allocation bit for bit (no FP8 cache outlives its step)', () => {
  const run = (arena: BufferArena | null): number[] => {
    const model = DeepseekV3.randomInit(CFG, 6);
    const opt = new AdamW(model.parameters(), { lr: 3e-3, momentDtype: 'bf16' });
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) {
      withArena(arena, () => {
        const f = forwardLosses(model, tokens(10 + s), { ...lossOpts, fp8: true }, B);
        losses.push(f.terms.total.item());
        backward(f.terms.total);
        applyUpdate(model, opt, new Map([...f.routing].map(([l, r]) => [l, Int32Array.from(r.load)] as const)), { lr: 3e-3, maxGradNorm: 1, balance: 'aux-free', bias: { gamma: 1e-3 } });
      });
      arena?.reset();
    }
    return [...losses, ...model.parameters().flatMap((p) => Array.from(p.f32().subarray(0, 64)))];
  };
  const arena = new BufferArena({ poison: true, minElems: 64 });
  const plain = run(null);
  assert.deepEqual(run(arena), plain);
  assert.ok(plain.every(Number.isFinite));
});

let cached: PreparedData | null = null;
function tinyData(): PreparedData {
  cached ??= prepareData({ corpus: { name: 'moby-slice', documents: loadMobyDick().documents.slice(3, 6).map((d) => d.slice(0, 6000)) }, vocabSize: 320, cacheDir: null, valFraction: 0.1, seqLen: 16 });
  return cached;
}

function opts(out: string, over: Partial<TrainOptions> = {}): TrainOptions {
  return {
    model: CFG, steps: 4, batch: 2, seq: 16, gradAccum: 2, lr: 3e-3, warmup: 1, seed: 5, balance: 'aux-free', balanceAlpha: 1e-4,
    bias: { gamma: 1e-3 }, mtpLambda: 0.3, evalEvery: 2, evalBatches: 1, ckptEvery: 2, out, quiet: true, prepared: tinyData(),
    momentDtype: 'bf16', fp8: true, ...over,
  };
}

test('trainer with fp8: recorded in run.json and metrics; resume is bit-exact; differs from float32', () => {
  const [a, b, c] = [0, 1, 2].map(() => fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-fp8-')));
  try {
    const full = train(opts(a));
    assert.equal(full.status, 'done');
    const first = train(opts(b, { steps: 2 }));
    const rest = train(opts(b, { resume: true }));
    assert.deepEqual([...first.losses, ...rest.losses], full.losses);
    for (const f of ['model.safetensors', 'trainer_state/optimizer.safetensors']) {
      assert.ok(fs.readFileSync(path.join(a, 'checkpoint-4', f)).equals(fs.readFileSync(path.join(b, 'checkpoint-4', f))), f);
    }
    const runJson = JSON.parse(fs.readFileSync(path.join(a, 'run.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(runJson['precision'], 'fp8');
    assert.equal(runJson['moment_dtype'], 'bf16');
    const steps = readMetrics(path.join(b, 'metrics.jsonl')).filter((r): r is StepRecord => r.type === 'step');
    assert.deepEqual(steps.map((s) => s.fp8), [true, true, true, true]);
    const f32 = train(opts(c, { fp8: false, steps: 2, evalEvery: 0, ckptEvery: 0 }));
    assert.notDeepEqual(f32.losses, full.losses.slice(0, 2));
    assert.equal(JSON.parse(fs.readFileSync(path.join(c, 'run.json'), 'utf8')).precision, 'fp32');
    assert.ok(readMetrics(path.join(c, 'metrics.jsonl')).every((r) => r.type !== 'step' || r.fp8 === undefined));
  } finally {
    for (const d of [a, b, c]) fs.rmSync(d, { recursive: true, force: true });
  }
});

function dsv3(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

test('dsv3 train --fp8 and dsv3 bench train --fp8 on a tiny config', () => {
  assert.equal(parseTrainArgs(['--fp8']).fp8, true);
  assert.equal(parseTrainArgs([]).fp8, undefined);
  assert.match(dsv3(['train', '--help']).stdout, /--fp8 {2,}FP8 mixed precision/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-fp8-cli-'));
  try {
    const run = path.join(dir, 'run');
    const t = dsv3(['train', '--fp8', ...tinyTrainingArgs(dir), '--steps', '2', '--batch', '2', '--seq', '16', '--eval-every', '0', '--out', run, '--quiet']);
    assert.equal(t.status, 0, t.stderr);
    const res = JSON.parse(t.stdout.trim()) as { status: string; step: number; final_loss: number };
    assert.equal(res.status, 'done');
    assert.ok(Number.isFinite(res.final_loss));
    assert.equal(JSON.parse(fs.readFileSync(path.join(run, 'run.json'), 'utf8')).precision, 'fp8');
    const bench = dsv3(['bench', 'train', '--fp8', '--config', path.join(dir, 'config.json'), '--batch', '1', '--seq', '8', '--steps', '1', '--warmup-steps', '0', '--json']);
    assert.equal(bench.status, 0, bench.stderr);
    const j = JSON.parse(bench.stdout.trim().split('\n').pop()!) as { fp8: boolean; loss_first: number };
    assert.equal(j.fp8, true);
    assert.ok(Number.isFinite(j.loss_first));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('AdamW moments default to BF16 under fp8 (paper §3.3.3) and bf16, f32 under fp32; --moment-dtype wins; resuming converts the checkpoint\'s', () => {
  const base = { lr: 1e-3, bias: { gamma: 1e-3 } };
  const recipe = (o: { fp8?: boolean; precision?: 'fp32' | 'bf16' | 'fp8'; momentDtype?: 'f32' | 'bf16' }): string => withRecipe({ ...base, ...o }).momentDtype;
  assert.equal(recipe({ fp8: true }), 'bf16');
  assert.equal(recipe({ fp8: false }), 'f32');
  assert.equal(recipe({}), 'f32');
  assert.equal(recipe({ fp8: true, momentDtype: 'f32' }), 'f32');
  // BF16 mixed precision defaults to BF16 moments too (issue 13, peak RSS); fp32 keeps float32
  assert.equal(recipe({ precision: 'fp8' }), 'bf16');
  assert.equal(recipe({ precision: 'bf16' }), 'bf16');
  assert.equal(recipe({ precision: 'bf16', momentDtype: 'f32' }), 'f32');
  assert.equal(recipe({ precision: 'fp32' }), 'f32');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-fp8-moments-'));
  try {
    const { momentDtype: _, ...noMoments } = opts(dir, { fp8: false, steps: 2, evalEvery: 0, ckptEvery: 1 });
    assert.equal(train(noMoments).status, 'done'); // a float32 run: f32 moments
    // continued with --fp8 and no --moment-dtype: BF16 moments, converted from the checkpoint's
    assert.equal(train({ ...noMoments, fp8: true, steps: 3, resume: true }).status, 'done');
    const st = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint-3', 'trainer_state', 'state.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(st['step'], 3);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
