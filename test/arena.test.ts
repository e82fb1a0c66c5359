import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferArena } from '../src/engine/arena.js';
import { activeArena, withArena } from '../src/engine/active-arena.js';
import { alloc, allocUninit } from '../src/engine/ops/util.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { AdamW } from '../src/train/optimizer.js';
import { applyUpdate, forwardLosses } from '../src/train/train-step.js';
import { tinyConfigJson } from './helpers/tiny-config.js';
import { attach, backward } from '../src/engine/autograd.js';
import { dropActivations } from '../src/engine/active-arena.js';
import { hugePagesActive } from '../src/engine/memory.js';
import { Tensor } from '../src/engine/tensor.js';
import { add, linear, sum } from '../src/engine/ops/index.js';
import { withMlaRecompute } from '../src/model/mla.js';
import type { Precision } from '../src/model/precision-mode.js';

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

/** The arena's peak bytes in use during the last step of the last `run`. */
let lastPeak = 0;

/** Losses and final weights of `steps` training steps, each in `arena` (reset after it) if given. */
function run(arena: BufferArena | null, steps: number, precision: Precision = 'fp32'): { losses: number[]; weights: Float32Array[] } {
  const model = DeepseekV3.randomInit(TINY, 3);
  const opt = new AdamW(model.parameters(), { lr: 3e-3, weightDecay: 0.1 });
  const B = 2, S = 24;
  const losses: number[] = [];
  let seed = 9;
  for (let s = 0; s < steps; s++) {
    const tokens = Int32Array.from({ length: B * (S + 1) }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % TINY.vocab_size);
    withArena(arena, () => {
      const f = forwardLosses(model, tokens, { mtpLambda: 0.3, balanceAlpha: 1e-2, balance: 'aux-free', precision }, B);
      losses.push(f.terms.total.item());
      backward(f.terms.total);
      const loads = new Map([...f.routing].map(([l, r]) => [l, Int32Array.from(r.load)] as const));
      applyUpdate(model, opt, loads, { lr: 3e-3, maxGradNorm: 1, balance: 'aux-free', bias: { gamma: 1e-2 } });
    });
    if (arena) lastPeak = arena.stats().peakInUseBytes;
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

for (const precision of ['bf16', 'fp8'] as const) {
  test(`arena: ${precision} training in a poisoning arena equals plain allocation bit for bit`, () => {
    // forward activations are released as soon as their last holder is done (drops in the
    // model, holds of the backward nodes): a buffer read after its release reads NaN here
    const arena = new BufferArena({ poison: true, minElems: 64 });
    const plain = run(null, 3, precision);
    const pooled = run(arena, 3, precision);
    assert.deepEqual(pooled.losses, plain.losses);
    assert.ok(plain.losses.every(Number.isFinite));
    for (let i = 0; i < plain.weights.length; i++) assert.deepEqual(pooled.weights[i], plain.weights[i], `parameter ${i} differs`);
  });
}

test('arena: a dropped buffer goes back once its last holder is done, not before', () => {
  const arena = new BufferArena({ poison: true, minElems: 16 });
  withArena(arena, () => {
    const a = allocUninit(100).fill(1);
    const b = allocUninit(100).fill(2);
    assert.equal(arena.hold(a.buffer), true);
    assert.equal(arena.hold(a.buffer), true);
    assert.equal(arena.hold(new ArrayBuffer(400)), false, 'a foreign buffer was held');
    arena.drop(a.buffer);
    arena.unhold(a.buffer);
    assert.equal(a[0], 1, 'released while a holder remains');
    assert.equal(arena.stats().inUseBytes, 2 * a.buffer.byteLength);
    arena.unhold(a.buffer);
    assert.equal(a.length, 0, 'not released after its last holder (poisoning detaches the old views)');
    assert.equal(arena.stats().inUseBytes, 448); // b (400 bytes: size class 448)
    // dropped with no holder: at once, and the next request of its class gets it
    const bBytes = b.buffer.byteLength;
    arena.drop(b.buffer);
    assert.equal(b.length, 0);
    const c = allocUninit(100);
    assert.ok(Number.isNaN(c[0]!) && c.buffer.byteLength === bBytes, 'the released buffer (NaN-filled) is not the next one handed out');
    assert.equal(arena.stats().inUseBytes, bBytes); // c
    // a buffer given back is no longer this step's: dropping it again does nothing
    const held = arena.stats().released;
    arena.drop(a.buffer);
    assert.equal(arena.stats().released, held);
    assert.equal(arena.stats().peakInUseBytes, 2 * bBytes);
  });
});

/** x * x with a backward that reads x; `declared` says whether attach is told so. */
function square(x: Tensor, declared: boolean): Tensor {
  const xd = x.f32();
  const y = allocUninit(xd.length);
  for (let i = 0; i < y.length; i++) y[i] = xd[i]! * xd[i]!;
  return attach(new Tensor(y, x.shape, 'f32'), 'square', [x], (g) => {
    const gd = g.contiguous().f32();
    const dx = allocUninit(xd.length);
    for (let i = 0; i < dx.length; i++) dx[i] = 2 * xd[i]! * gd[i]!;
    return [new Tensor(dx, x.shape, 'f32')];
  }, declared ? [xd] : []);
}

test('arena: a backward that reads a dropped buffer it did not declare is caught by poisoning', () => {
  // the debug mode for use-after-release: an op that does not list what its closure reads
  // lets the forward's drop release it, and the poisoning arena (NaN-filled on release) or the
  // buffer's next user changes what the backward reads
  const grad = (declared: boolean): Float32Array => {
    const arena = new BufferArena({ poison: true, minElems: 16 });
    const w = Tensor.param(Float32Array.from({ length: 64 }, (_, i) => (i % 7) - 3), [64]);
    withArena(arena, () => {
      const x = add(w, w); // an add keeps nothing for its backward
      const y = square(x, declared);
      dropActivations(x); // the forward is done with x
      backward(sum(y));
    });
    const g = w.grad!.f32().slice();
    arena.reset();
    return g;
  };
  const good = grad(true);
  assert.ok(good.every(Number.isFinite));
  assert.deepEqual(Array.from(good), Array.from({ length: 64 }, (_, i) => 8 * ((i % 7) - 3))); // d/dw (2w)^2
  // the released buffer's old views are detached (length 0): the backward fails, or reads
  // nothing / NaN and gives a wrong gradient; it never silently gives the right one
  let bad: Float32Array | null = null;
  try {
    bad = grad(false);
  } catch (e) {
    assert.match(String(e), /0 elements|length|detached/i);
  }
  if (bad) assert.notDeepEqual(Array.from(bad), Array.from(good), 'the undeclared read was not caught');
});

for (const precision of ['fp32', 'bf16', 'fp8'] as const) {
  test(`arena: ${precision} MLA up-projections recomputed in backward give the same bits and a lower peak`, () => {
    const peak = (on: boolean): { r: ReturnType<typeof run>; peak: number } => {
      const r = withMlaRecompute(on, () => run(new BufferArena({ minElems: 64 }), 1, precision));
      return { r, peak: lastPeak };
    };
    const on = peak(true);
    const off = peak(false);
    assert.deepEqual(on.r.losses, off.r.losses);
    for (let i = 0; i < on.r.weights.length; i++) assert.deepEqual(on.r.weights[i], off.r.weights[i], `parameter ${i} differs`);
    assert.ok(on.peak < off.peak, `peak in use ${on.peak} B with recomputation, ${off.peak} B without`);
  });
}

test('arena: giveBack unmaps free huge-page buffers of other classes before mapping a new one', { skip: !hugePagesActive() && 'no huge-page allocator (addon missing or DSV3_HUGEPAGES=0)' }, () => {
  const arena = new BufferArena({ giveBack: true });
  const MiB = 1 << 18; // floats
  const [a, b] = withArena(arena, () => [allocUninit(2 * MiB), allocUninit(2 * MiB)]);
  arena.release(a.buffer as ArrayBuffer);
  arena.release(b.buffer as ArrayBuffer);
  const held = arena.stats().heldBytes;
  withArena(arena, () => allocUninit(4 * MiB)); // 16 MiB, another class: both free 8 MiB buffers make room
  assert.equal(arena.stats().givenBack, 2, JSON.stringify(arena.stats()));
  assert.equal(arena.stats().heldBytes, held, 'the arena holds more than before');
  assert.equal(a.length + b.length, 0, 'the unmapped buffers\' views are not detached');
});

test('arena: a request whose class has nothing free borrows a free buffer of a class at most BORROW_RATIO larger', async () => {
  const { BORROW_RATIO } = await import('../src/engine/arena.js');
  for (const borrow of [true, false]) {
    const arena = new BufferArena({ minElems: 16, borrow });
    withArena(arena, () => {
      const big = allocUninit(1400); // class 5632 bytes
      dropActivations(big); // free now
      const small = allocUninit(1000); // class 4096: none free; 5632 <= 1.5 * 4096
      assert.equal(small.buffer === big.buffer, borrow);
      assert.equal(small.length, 1000);
      dropActivations(small);
      assert.equal(arena.stats().inUseBytes, 0, 'the borrowed buffer goes back to its own class');
      const tiny = allocUninit(500); // class 2048: 5632 is more than BORROW_RATIO times larger
      assert.notEqual(tiny.buffer, big.buffer);
      assert.ok(5632 > 2048 * BORROW_RATIO);
    });
  }
});

test('arena: weight gradients are carved from shared 2 MiB slabs of the step (arenaSlabF32)', async () => {
  const { arenaSlabF32 } = await import('../src/engine/active-arena.js');
  assert.equal(arenaSlabF32(1000), null, 'no arena: the caller allocates');
  const arena = new BufferArena({ minElems: 16 });
  withArena(arena, () => {
    const a = arenaSlabF32(1000)!;
    const b = arenaSlabF32(3)!;
    assert.equal(b, null, 'below the arena minimum');
    const c = arenaSlabF32(5000)!;
    assert.equal(a.buffer, c.buffer, 'one slab');
    assert.equal(c.byteOffset, 4032, '64-byte aligned after 4000 bytes');
    assert.equal(a.length, 1000);
    assert.ok(arena.owns(a.buffer));
    assert.equal(arenaSlabF32(2 ** 20), null, 'more than a quarter slab: the caller allocates');
  });
  const held = arena.stats().heldBytes;
  arena.reset();
  withArena(arena, () => {
    const d = arenaSlabF32(1000)!;
    assert.equal(d.byteOffset, 0, 'a new slab after the reset');
    assert.equal(arena.stats().heldBytes, held, 'the slab buffer is reused');
  });
  arena.reset();
  withArena(arena, () => {
    // the old slab taken by another request of this step: never carved into again
    const other = allocUninit(2 * 1024 * 1024 / 4);
    const e = arenaSlabF32(1000)!;
    assert.notEqual(e.buffer, other.buffer);
    assert.equal(e.byteOffset, 0);
  });
  // autograd: a weight's .grad made in an arena is a slab view, and equals plain allocation
  const run = (inArena: boolean): Float32Array => {
    const w = Tensor.param(Float32Array.from({ length: 64 * 32 }, (_, i) => Math.sin(i)), [64, 32]);
    const x = Tensor.fromF32(Float32Array.from({ length: 8 * 32 }, (_, i) => Math.cos(i)), [8, 32]);
    const go = (): Float32Array => {
      backward(sum(linear(x, w)));
      if (inArena) assert.ok(w.grad!.f32().buffer.byteLength >= 2 * 1024 * 1024, 'a slab view');
      return w.grad!.f32().slice();
    };
    return inArena ? withArena(new BufferArena({ minElems: 16 }), go) : go();
  };
  assert.deepEqual(run(true), run(false));
});
