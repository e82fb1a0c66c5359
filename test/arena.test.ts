import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferArena, activeArena, withArena } from '../src/engine/arena.js';
import { alloc, allocUninit } from '../src/engine/ops/util.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { AdamW } from '../src/train/optimizer.js';
import { applyUpdate, forwardLosses } from '../src/train/train-step.js';
import { tinyConfigJson } from './helpers/tiny-config.js';
import { backward } from '../src/engine/autograd.js';

test('arena: buffers are reused after reset, alloc is zeroed, size classes bound the slack', () => {
  const arena = new BufferArena({ minElems: 16 });
  const a = withArena(arena, () => allocUninit(1000));
  a.fill(7);
  assert.equal(a.length, 1000);
  assert.ok(a.buffer.byteLength >= 4000 && a.buffer.byteLength <= 4000 * 1.125, `class ${a.buffer.byteLength}`);
  arena.reset();
  // the same size class: the same buffer again; alloc() must clear what the last step left
  const b = withArena(arena, () => alloc(990));
  assert.equal(b.buffer, a.buffer);
  assert.ok(b.every((x) => x === 0), 'alloc from the arena is not zero-filled');
  // a second request in the same step cannot get a buffer already handed out
  const c = withArena(arena, () => alloc(990));
  assert.notEqual(c.buffer, b.buffer);
  assert.deepEqual(arena.stats().taken, 2);
  // below minElems and outside withArena: plain allocations
  assert.equal(withArena(arena, () => alloc(8)).buffer.byteLength < 4000, true);
  assert.equal(activeArena(), null);
  assert.notEqual(alloc(1000).buffer, a.buffer);
  const held = arena.stats().heldBytes;
  arena.reset();
  arena.reset(); // one step that took nothing: what the step before needed is kept
  assert.equal(arena.stats().heldBytes, held);
  arena.reset(); // two: the free buffers are dropped
  assert.equal(arena.stats().heldBytes, 0);
});

test('arena: poison fills released buffers with NaN', () => {
  const arena = new BufferArena({ poison: true, minElems: 16 });
  const a = withArena(arena, () => alloc(100));
  a.fill(1);
  arena.reset();
  assert.ok(Number.isNaN(a[0]!) && Number.isNaN(a[99]!));
});

test('arena: early release only frees buffers taken since the epoch, once', () => {
  const arena = new BufferArena({ minElems: 16 });
  const before = withArena(arena, () => allocUninit(100));
  const since = arena.epoch();
  const after = withArena(arena, () => allocUninit(100));
  assert.equal(arena.release(before.buffer as ArrayBuffer, since), false, 'a buffer from before the epoch was released');
  assert.equal(arena.release(after.buffer as ArrayBuffer, since), true);
  assert.equal(arena.release(after.buffer as ArrayBuffer, since), false, 'released twice');
  assert.equal(arena.release(new ArrayBuffer(448), since), false, 'a foreign buffer was released');
  // the released buffer is the next one handed out in its class
  assert.equal(withArena(arena, () => allocUninit(100)).buffer, after.buffer);
  assert.equal(arena.stats().released, 1);
});

test('arena: withArena nests and restores the previous arena on throw', () => {
  const outer = new BufferArena();
  const inner = new BufferArena();
  withArena(outer, () => {
    assert.equal(activeArena(), outer);
    assert.throws(() => withArena(inner, () => { throw new Error('x'); }));
    assert.equal(activeArena(), outer);
    withArena(null, () => assert.equal(activeArena(), null));
  });
  assert.equal(activeArena(), null);
});

/** Tiny DeepSeek-V3: dense + MoE layer, grouped routing, one MTP module. */
const TINY = parseModelConfig(tinyConfigJson({ vocab_size: 96, max_position_embeddings: 64 }), 'tiny');

/** Losses and final weights of `steps` training steps, each in `arena` (reset after it) if given. */
function run(arena: BufferArena | null, steps: number): { losses: number[]; weights: Float32Array[] } {
  const model = DeepseekV3.randomInit(TINY, 3);
  const opt = new AdamW(model.parameters(), { lr: 3e-3, weightDecay: 0.1 });
  const B = 2, S = 24;
  const losses: number[] = [];
  let seed = 9;
  for (let s = 0; s < steps; s++) {
    const tokens = Int32Array.from({ length: B * (S + 1) }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % TINY.vocab_size);
    withArena(arena, () => {
      const f = forwardLosses(model, tokens, { mtpLambda: 0.3, balanceAlpha: 1e-2, balance: 'aux-free' }, B);
      losses.push(f.terms.total.item());
      backward(f.terms.total);
      const loads = new Map([...f.routing].map(([l, r]) => [l, Int32Array.from(r.load)] as const));
      applyUpdate(model, opt, loads, { lr: 3e-3, maxGradNorm: 1, balance: 'aux-free', bias: { gamma: 1e-2 } });
    });
    arena?.reset();
  }
  return { losses, weights: model.parameters().map((p) => p.f32().slice()) };
}

test('arena: training steps in a poisoning arena equal plain allocation bit for bit', () => {
  // every buffer of 64+ floats comes from the arena and is NaN-filled after its step, so a
  // tensor that outlives its step (a cache, optimizer state, a saved gradient) breaks equality
  const arena = new BufferArena({ poison: true, minElems: 64 });
  const plain = run(null, 4);
  const pooled = run(arena, 4);
  assert.ok(arena.stats().hits > 100, `arena barely used: ${JSON.stringify(arena.stats())}`);
  assert.ok(arena.stats().released > 50, `backward released few gradient buffers early: ${JSON.stringify(arena.stats())}`);
  assert.deepEqual(pooled.losses, plain.losses);
  assert.ok(plain.losses.every(Number.isFinite));
  for (let i = 0; i < plain.weights.length; i++) assert.deepEqual(pooled.weights[i], plain.weights[i], `parameter ${i} differs`);
});
