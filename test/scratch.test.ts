import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferArena } from '../src/engine/arena.js';
import { withArena } from '../src/engine/active-arena.js';
import { scratchF32, scratchFree, scratchScope, scratchU16 } from '../src/engine/scratch.js';

test('scratch: inside a scope with an arena, buffers come from the arena and go back when the outermost scope ends', () => {
  const arena = new BufferArena({ minElems: 16 });
  withArena(arena, () => {
    let a: Float32Array | null = null;
    scratchScope(() => {
      a = scratchF32('t.a', 1000);
      assert.ok(arena.owns(a.buffer), 'scratch in a scope is taken from the arena');
      assert.equal(scratchF32('t.a', 900).buffer, a.buffer, 'same name, same scope: the same buffer');
      const b = scratchU16('t.b', 3000);
      assert.equal(b.length, 3000);
      assert.notEqual(b.buffer, a.buffer);
      scratchScope(() => {
        // a nested scope shares the names and releases nothing
        assert.equal(scratchF32('t.a', 100).buffer, a!.buffer);
      });
      assert.ok(arena.owns(a.buffer), 'the nested scope did not release');
      const bigger = scratchF32('t.a', 5000); // outgrown: a new buffer, the old one released at the end too
      assert.notEqual(bigger.buffer, a.buffer);
      assert.equal(arena.stats().inUseBytes >= (1000 + 1500 + 5000) * 4, true);
    });
    assert.equal(arena.owns(a!.buffer), false, 'released at the end of the scope');
    assert.equal(arena.stats().inUseBytes, 0);
    // the next scope reuses the freed buffer (same size class)
    const again = scratchScope(() => scratchF32('t.c', 1000).buffer);
    assert.equal(again, a!.buffer);
  });
});

test('scratch: outside an arena (or a scope) buffers are per-name module buffers, kept across calls', () => {
  const a = scratchScope(() => scratchF32('t.p', 100));
  const b = scratchScope(() => scratchF32('t.p', 50));
  assert.equal(a.buffer, b.buffer);
  const arena = new BufferArena({ minElems: 16 });
  // in an arena but outside a scope: the module buffer too (never released into the arena)
  const c = withArena(arena, () => scratchF32('t.p', 100));
  assert.equal(c.buffer, a.buffer);
  assert.equal(arena.stats().taken, 0);
  // below the arena's minimum: the module buffer
  const d = withArena(arena, () => scratchScope(() => scratchF32('t.p', 8)));
  assert.equal(d.buffer, a.buffer);
});

test('scratch: a poisoning arena NaN-fills and detaches scratch after its scope; a held scratch buffer throws', () => {
  const arena = new BufferArena({ minElems: 16, poison: true });
  withArena(arena, () => {
    const a = scratchScope(() => scratchF32('t.q', 1000).fill(1));
    assert.equal(a.length, 0, 'a view over released scratch is detached');
    assert.throws(() => scratchScope(() => {
      const s = scratchF32('t.r', 1000);
      arena.hold(s.buffer); // as if a backward node had saved it
    }), /held by a backward node/);
  });
});

test('scratch: scratchFree gives a scope buffer back before the scope ends; a later request takes a fresh one', () => {
  const arena = new BufferArena({ minElems: 16, poison: true });
  withArena(arena, () => {
    scratchScope(() => {
      const a = scratchF32('t.f', 1000);
      scratchFree('t.f', 't.none');
      assert.equal(a.length, 0, 'poisoned and detached once freed');
      assert.equal(arena.stats().inUseBytes, 0);
      const b = scratchF32('t.f', 1000);
      assert.equal(b.length, 1000);
      assert.ok(arena.owns(b.buffer));
    });
    assert.equal(arena.stats().inUseBytes, 0);
  });
  scratchFree('t.f'); // outside a scope: nothing happens
});
