// kernels().moeRows / moeRowsBf16 (native/src/isa/moe_rows.c): the routed experts of several token
// rows in one call (float32 / bf16 weights), against the reference (one expert after another: reference GEMMs and siluMul), for
// every ISA this CPU has and 1 and 2 threads. Shapes: bench-small's experts (D 256, I 128)
// with 0 .. 17 rows per expert (passes of 4 rows and their tails), sizes that are not multiples
// of the vector width or of the 4-row output quads (D 37, I 21), and one tiny expert.
// Tolerance: |native - ref| <= 1e-5 * max|ref| per output array (float32 partial sums against
// the reference's float64; siluMul's formula and exp are shared, so act differs only through g, u).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import { moeRows, moeRowsBf16 } from '../src/engine/reference/moe-rows.js';

const { A, opts, eachConfig } = nativeForTests();

let seed = 987;
function rand(): number {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const randArray = (n: number): Float32Array => Float32Array.from({ length: n }, () => 2 * rand() - 1);

function close(got: Float32Array, want: Float32Array, what: string): void {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= 1e-5 * scale)) assert.fail(`${what}[${i}]: native ${got[i]} vs reference ${want[i]} (scale ${scale})`);
  }
}

type MoeRows = typeof moeRows;
type MoeRowsBf16 = typeof moeRowsBf16;
/** bf16 bits of random values in [-1, 1) (any bit pattern of a finite value is a valid weight) */
const randBits = (n: number): Uint16Array => {
  const f = randArray(n);
  return Uint16Array.from(new Uint32Array(f.buffer), (u) => u >>> 16);
};

test('moeRows: native equals the reference (counts 0..17 per expert, odd sizes, every ISA, 1 and 2 threads)', opts, () => {
  const nat = A['moeRows'] as unknown as MoeRows;
  assert.equal(typeof nat, 'function', 'the addon exports moeRows');
  const cases: [number, number, number[]][] = [
    [256, 128, [0, 1, 2, 3, 4, 5, 0, 8, 17, 1, 0, 0, 3, 7, 2, 6]],
    [37, 21, [2, 0, 5, 1]],
    [16, 8, [1, 9]],
    [256, 128, [0, 0, 1]],
  ];
  for (const [D, I, counts] of cases) {
    const E = counts.length;
    const off = new Int32Array(E + 1);
    counts.forEach((c, e) => (off[e + 1] = off[e]! + c));
    const rows = off[E]!;
    const x = randArray(rows * D);
    const gates = counts.map(() => randArray(I * D));
    const ups = counts.map(() => randArray(I * D));
    const downs = counts.map(() => randArray(D * I));
    const run = (f: MoeRows): Float32Array[] => {
      const out = [new Float32Array(rows * I), new Float32Array(rows * I), new Float32Array(rows * I), new Float32Array(rows * D)];
      f(x, off, gates, ups, downs, D, I, out[0]!, out[1]!, out[2]!, out[3]!);
      return out;
    };
    const want = run(moeRows);
    eachConfig((label) => {
      const got = run(nat);
      ['g', 'u', 'act', 'y'].forEach((name, i) => close(got[i]!, want[i]!, `${label} D=${D} I=${I} ${name}`));
    });
    // bf16 weights: x and act rounded to bf16 as gemmBf16 does (the reference runs gemmBf16)
    const natBf = A['moeRowsBf16'] as unknown as MoeRowsBf16;
    const bg = counts.map(() => randBits(I * D));
    const bu = counts.map(() => randBits(I * D));
    const bd = counts.map(() => randBits(D * I));
    const runBf = (f: MoeRowsBf16): Float32Array[] => {
      const out = [new Float32Array(rows * I), new Float32Array(rows * I), new Float32Array(rows * I), new Float32Array(rows * D)];
      f(x, off, bg, bu, bd, D, I, out[0]!, out[1]!, out[2]!, out[3]!);
      return out;
    };
    const wantBf = runBf(moeRowsBf16);
    eachConfig((label) => {
      const got = runBf(natBf);
      ['g', 'u', 'act', 'y'].forEach((name, i) => close(got[i]!, wantBf[i]!, `bf16 ${label} D=${D} I=${I} ${name}`));
    });
  }
});

test('moeRows: bad operands are refused with a message naming them', opts, () => {
  const nat = A['moeRows'] as unknown as MoeRows;
  const D = 8, I = 4;
  const w = [new Float32Array(I * D)];
  const buf = (n: number): Float32Array => new Float32Array(n);
  const call = (off: Int32Array, ws = w, x = buf(2 * D)): void => nat(x, off, ws, ws, ws, D, I, buf(2 * I), buf(2 * I), buf(2 * I), buf(2 * D));
  for (const f of [nat, moeRows]) {
    assert.throws(() => f(buf(2 * D), Int32Array.of(1, 2), w, w, w, D, I, buf(8), buf(8), buf(8), buf(16)), /offsets/);
    assert.throws(() => f(buf(2 * D), Int32Array.of(0, 3, 2), [w[0]!, w[0]!], [w[0]!, w[0]!], [w[0]!, w[0]!], D, I, buf(8), buf(8), buf(8), buf(16)), /offsets/);
  }
  assert.throws(() => call(Int32Array.of(0, 2), [new Float32Array(I * D - 1)]), /gates\[0\]/);
  assert.throws(() => call(Int32Array.of(0, 2), w, buf(2 * D - 1)), /'x'/);
  const natBf = A['moeRowsBf16'] as unknown as MoeRowsBf16;
  assert.throws(() => natBf(buf(2 * D), Int32Array.of(0, 2), w as unknown as Uint16Array[], w as unknown as Uint16Array[], w as unknown as Uint16Array[], D, I, buf(8), buf(8), buf(8), buf(16)), /gates\[0\]' must be a Uint16Array/);
  call(Int32Array.of(0, 2));
});
