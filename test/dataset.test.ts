import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DsvError } from '../src/errors.js';
import { Rng, deriveSeed } from '../src/data/rng.js';
import { corpusChars, corpusHash, loadCorpus } from '../src/data/corpus.js';
import { tokenizeCorpus } from '../src/data/token-cache.js';
import {
  BatchIterator,
  inputsAndTargets,
  prepareData,
  splitTrainVal,
  validationBatches,
  type BatchIteratorState,
} from '../src/data/dataset.js';

function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'dsv3-data-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ramp = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i);

test('Rng: xoshiro128** reference values, seeding, state round trip', () => {
  // reference outputs of the C implementation from state {1, 2, 3, 4}
  const r = Rng.fromState({ s: [1, 2, 3, 4] });
  assert.deepEqual([0, 1, 2, 3, 4].map(() => r.nextUint32()), [11520, 0, 5927040, 70819200, 2031721883]);
  // seed 42 through splitmix64, as in the C reference
  const q = new Rng(42);
  assert.deepEqual([0, 1, 2].map(() => q.nextUint32()), [1776835114, 4165204688, 17111135]);
  const a = new Rng(7);
  for (let i = 0; i < 10; i++) a.nextFloat();
  const saved = JSON.parse(JSON.stringify(a.state()));
  const xs = [a.nextUint32(), a.nextNormal(), a.nextInt(10)];
  const b = Rng.fromState(saved);
  assert.deepEqual([b.nextUint32(), b.nextNormal(), b.nextInt(10)], xs);
  const c = new Rng('a string seed');
  for (let i = 0; i < 1000; i++) {
    const v = c.nextInt(7);
    assert.ok(v >= 0 && v < 7);
    const f = c.nextFloat();
    assert.ok(f >= 0 && f < 1);
  }
  assert.notEqual(deriveSeed(1, 'x', 0), deriveSeed(1, 'x', 1));
  assert.equal(deriveSeed(1, 'x', 0), deriveSeed(1, 'x', 0));
  assert.deepEqual([...new Rng(3).permutation(10)].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const f1 = new Rng(9).fork('init');
  const f2 = new Rng(9).fork('init');
  assert.equal(f1.nextUint32(), f2.nextUint32());
  assert.notEqual(new Rng(9).fork('a').nextUint32(), new Rng(9).fork('b').nextUint32());
  assert.throws(() => new Rng(-1), DsvError);
  assert.throws(() => new Rng(1.5), /seed must be a non-negative integer/);
  assert.throws(() => a.restore({ s: [0, 0, 0, 0] }), /RNG state/);
});

test('loadCorpus: Moby-Dick by default, files and directories with --data, clear errors', () => {
  const moby = loadCorpus();
  assert.equal(moby.name, 'moby-dick');
  assert.equal(moby.documents.length, 139);
  assert.ok(corpusChars(moby) > 1_000_000);
  assert.match(moby.documents[3]!, /^CHAPTER 1\. Loomings\.\n\nCall me Ishmael\./);
  withTempDir((dir) => {
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'b.txt'), 'second');
    writeFileSync(join(dir, 'a.md'), '\ufefffirst');
    writeFileSync(join(dir, 'sub', 'c.TXT'), 'third');
    writeFileSync(join(dir, 'skip.json'), '{}');
    writeFileSync(join(dir, '.hidden.txt'), 'hidden');
    writeFileSync(join(dir, 'empty.txt'), '  \n');
    const c = loadCorpus(dir);
    assert.deepEqual(c.documents, ['first', 'second', 'third']);
    assert.equal(c.name, dir);
    assert.deepEqual(loadCorpus(join(dir, 'b.txt')).documents, ['second']);
    assert.notEqual(corpusHash(c), corpusHash({ name: 'x', documents: ['firstsecond', 'third'] }));
    assert.throws(() => loadCorpus(join(dir, 'missing')), (e: unknown) => {
      assert.ok(e instanceof DsvError);
      assert.equal(e.message, `--data ${join(dir, 'missing')}: no such file or directory`);
      return true;
    });
    assert.throws(() => loadCorpus(join(dir, 'empty.txt')), /--data .*empty\.txt: the file is empty/);
    mkdirSync(join(dir, 'none'));
    writeFileSync(join(dir, 'none', 'x.csv'), 'a,b');
    assert.throws(() => loadCorpus(join(dir, 'none')), /--data .*none: the directory has no \.txt or \.md files/);
  });
});

test('splitTrainVal and inputsAndTargets', () => {
  const { train, val } = splitTrainVal(ramp(100), 0.05);
  assert.equal(train.length, 95);
  assert.deepEqual([...val], [95, 96, 97, 98, 99]);
  assert.equal(splitTrainVal(ramp(10), 0).val.length, 0);
  assert.throws(() => splitTrainVal(ramp(10), 1), /valFraction: expected a number in \[0, 1\), got 1/);
  const batch = { tokens: Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), batchSize: 2, seqLen: 3 };
  const { inputs, targets } = inputsAndTargets(batch);
  assert.deepEqual([...inputs], [1, 2, 3, 5, 6, 7]);
  assert.deepEqual([...targets], [2, 3, 4, 6, 7, 8]);
});

test('BatchIterator: batches are contiguous windows, every window once per epoch, seeded order', () => {
  const tokens = ramp(1001);
  const S = 10;
  const it = new BatchIterator(tokens, { batchSize: 4, seqLen: S, seed: 1, randomOffset: false });
  assert.equal(it.sequencesPerEpoch, 100);
  const starts: number[] = [];
  for (let b = 0; b < 25; b++) {
    const batch = it.next();
    assert.equal(batch.tokens.length, 4 * (S + 1));
    for (let r = 0; r < 4; r++) {
      const row = batch.tokens.subarray(r * (S + 1), (r + 1) * (S + 1));
      for (let k = 1; k <= S; k++) assert.equal(row[k], row[0]! + k);
      starts.push(row[0]!);
    }
  }
  assert.deepEqual([...starts].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i * S));
  assert.notDeepEqual(starts.slice(0, 10), [0, 10, 20, 30, 40, 50, 60, 70, 80, 90], 'shuffled');
  assert.equal(it.currentEpoch, 0);
  it.next();
  assert.equal(it.currentEpoch, 1);

  const same = new BatchIterator(tokens, { batchSize: 4, seqLen: S, seed: 1, randomOffset: false });
  const other = new BatchIterator(tokens, { batchSize: 4, seqLen: S, seed: 2, randomOffset: false });
  const first = same.next().tokens;
  assert.deepEqual([...first.subarray(0, 4 * (S + 1))], starts.slice(0, 4).flatMap((s) => Array.from({ length: S + 1 }, (_, k) => s + k)));
  assert.notDeepEqual([...other.next().tokens], [...first]);
});

test('BatchIterator: state() / restore() resumes bit-exactly, across epochs and through JSON', () => {
  const tokens = Int32Array.from({ length: 5000 }, (_, i) => (i * 7919) % 4096);
  const opts = { batchSize: 3, seqLen: 16, seed: 1234 };
  const a = new BatchIterator(tokens, opts);
  for (let i = 0; i < 150; i++) a.next(); // > 1 epoch (312 windows / 3 per batch = 104 batches)
  assert.ok(a.currentEpoch >= 1);
  const saved = JSON.parse(JSON.stringify(a.state())) as BatchIteratorState;
  const expected = Array.from({ length: 120 }, () => [...a.next().tokens]);
  const b = new BatchIterator(tokens, opts);
  b.restore(saved);
  assert.equal(b.steps, 150);
  assert.deepEqual(Array.from({ length: 120 }, () => [...b.next().tokens]), expected);
  assert.deepEqual(b.state(), a.state());

  // a fresh iterator with the same seed replays the same stream from the start
  const c = new BatchIterator(tokens, opts);
  const d = new BatchIterator(tokens, opts);
  for (let i = 0; i < 200; i++) assert.deepEqual(c.next().tokens, d.next().tokens);

  const wrongSeed = new BatchIterator(tokens, { ...opts, seed: 99 });
  assert.throws(() => wrongSeed.restore(saved), /data iterator state: seed is .* but this run has/);
  const otherData = new BatchIterator(tokens.map((t) => t + 1), opts);
  assert.throws(() => otherData.restore(saved), /data iterator state: dataChecksum/);
  assert.throws(() => b.restore({ ...saved, cursor: -1 }), /cursor must be a non-negative integer/);
});

test('BatchIterator and validationBatches: errors and shapes', () => {
  assert.throws(() => new BatchIterator(ramp(8), { batchSize: 1, seqLen: 8, seed: 0 }), (e: unknown) => {
    assert.ok(e instanceof DsvError);
    assert.match(e.message, /training data: 8 tokens, fewer than seqLen \+ 1 = 9/);
    return true;
  });
  assert.throws(() => new BatchIterator(ramp(100), { batchSize: 0, seqLen: 8, seed: 0 }), /batchSize: expected a positive integer, got 0/);
  const val = [...validationBatches(ramp(51), 2, 10)];
  assert.deepEqual(val.map((b) => b.batchSize), [2, 2, 1]);
  assert.deepEqual([...val[2]!.tokens], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]);
  assert.equal([...validationBatches(ramp(5), 2, 10)].length, 0);
});

test('prepareData: tokenises, splits, and reuses the cache on a second run', () => {
  withTempDir((dir) => {
    const data = join(dir, 'corpus');
    mkdirSync(data);
    const rng = new Rng(5);
    const words = ['whale', 'sea', 'ship', 'the', 'a', 'of', 'Ahab', 'harpoon', '42', '—', 'naïve'];
    for (let f = 0; f < 3; f++) {
      const text = Array.from({ length: 3000 }, () => words[rng.nextInt(words.length)]).join(' ');
      writeFileSync(join(data, `part${f}.txt`), text);
    }
    const cacheDir = join(dir, 'cache');
    const logs: string[] = [];
    const first = prepareData({ data, vocabSize: 280, cacheDir, valFraction: 0.1, seqLen: 32, log: (m) => logs.push(m) });
    assert.equal(first.fromCache, false);
    assert.equal(first.documents, 3);
    assert.ok(first.cachePath && existsSync(join(first.cachePath, 'tokenizer.json')));
    assert.ok(existsSync(join(first.cachePath!, 'tokens.bin')));
    const total = first.train.length + first.val.length;
    assert.equal(first.val.length, Math.ceil(total * 0.1));
    assert.equal(first.train[0], first.tokenizer.bosId);
    assert.ok(logs.some((m) => m.includes('training a 280-token BPE tokenizer')));

    const second = prepareData({ data, vocabSize: 280, cacheDir, valFraction: 0.1, seqLen: 32 });
    assert.equal(second.fromCache, true);
    assert.deepEqual(second.train, first.train);
    assert.deepEqual(second.val, first.val);
    assert.equal(second.tokenizer.vocabSize, 280);
    const probe = 'the whale and the naïve harpoon 42';
    assert.deepEqual(second.tokenizer.encode(probe), first.tokenizer.encode(probe));

    const otherVocab = prepareData({ data, vocabSize: 270, cacheDir, valFraction: 0.1 });
    assert.equal(otherVocab.fromCache, false);
    assert.notEqual(otherVocab.cachePath, first.cachePath);

    // the cached tokens are the ones a fresh, uncached run produces
    const fresh = tokenizeCorpus(loadCorpus(data), { vocabSize: 280, cacheDir: null });
    assert.equal(fresh.cachePath, null);
    assert.deepEqual([...fresh.tokens.subarray(0, first.train.length)], [...first.train]);

    assert.throws(
      () => prepareData({ data, vocabSize: 280, cacheDir, valFraction: 0.001, seqLen: 512 }),
      /the validation split has \d+ tokens \(valFraction 0\.001\), fewer than seqLen \+ 1 = 513/,
    );
  });
});
