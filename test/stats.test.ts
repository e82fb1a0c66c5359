import { test } from 'node:test';
import assert from 'node:assert/strict';
import { median, quantile } from '../src/data/stats.js';

test('median and quantile: middle values, interpolation, non-finite values ignored', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([NaN, 5, Infinity, 1]), 3);
  assert.ok(Number.isNaN(median([])));
  assert.equal(quantile([0, 10, 20, 30, 40], 0.9), 36);
  assert.equal(quantile([7], 0.9), 7);
  assert.equal(quantile([1, 2, 3], 0), 1);
  assert.equal(quantile([1, 2, 3], 1), 3);
});
