/** DeepSeekMoE routing variants (noaux_tc with bias and group limit, V2 group_limited_greedy, greedy). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../src/engine/tensor.js';
import { routeTokens, selectExperts, type RouterConfig } from '../src/model/router.js';
import { gradcheck } from './helpers/gradcheck.js';

const logit = (p: number): number => Math.log(p / (1 - p));

/** Routes one token whose gate logits are exactly `logits` (identity router weight). */
function route(logits: number[], rc: RouterConfig, bias: number[] | null = null) {
  const E = logits.length;
  const eye = new Float32Array(E * E);
  for (let i = 0; i < E; i++) eye[i * E + i] = 1;
  return routeTokens(Tensor.from(logits, [1, E]), Tensor.fromF32(eye, [E, E]), bias ? Tensor.from(bias) : null, rc);
}

const V3: RouterConfig = { experts: 8, topK: 2, nGroup: 4, topkGroup: 2, scoring: 'sigmoid', method: 'noaux_tc', normTopkProb: true, scalingFactor: 2.5 };
const S = [0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.6, 0.5];

function close(a: ArrayLike<number>, b: number[], tol = 1e-6): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < b.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= tol, `[${i}] ${a[i]} vs ${b[i]}`);
}

describe('routeTokens', () => {
  it('noaux_tc: groups scored by their top-2 sum; the best expert of a dropped group is not chosen', () => {
    // groups {0.9,0.1}=1.0 {0.8,0.7}=1.5 {0.2,0.3}=0.5 {0.6,0.5}=1.1 -> keep groups 1 and 3
    const r = route(S.map(logit), V3);
    assert.deepEqual([...r.topkIdx], [2, 3]);
    close(r.weights.f32(), [(0.8 / 1.5) * 2.5, (0.7 / 1.5) * 2.5]);
    close(r.scores.f32(), S);
    assert.deepEqual([...r.load], [0, 0, 1, 1, 0, 0, 0, 0]);
  });

  it('noaux_tc: the bias changes the choice but never the gate values', () => {
    const r = route(S.map(logit), V3, [0, 0, 0, 0, 0, 0, 0.5, 0]);
    assert.deepEqual([...r.topkIdx], [6, 2]); // biased 1.1 > 0.8; stored in descending biased score
    close(r.weights.f32(), [(0.6 / 1.4) * 2.5, (0.8 / 1.4) * 2.5]);
  });

  it('group_limited_greedy (V2): softmax over all experts, groups by their max, raw gates', () => {
    const rc: RouterConfig = { ...V3, scoring: 'softmax', method: 'group_limited_greedy', normTopkProb: false, scalingFactor: 4 };
    const logits = [2.0, 1.9, 0.0, 1.95, 0.1, 0.2, 1.0, -1.0];
    const r = route(logits, rc);
    const z = logits.reduce((a, x) => a + Math.exp(x), 0);
    const s = logits.map((x) => Math.exp(x) / z);
    // group maxima: 2.0, 1.95, 0.2, 1.0 -> groups 0, 1 -> experts 0, 1, 2, 3 -> top-2: 0, 3
    assert.deepEqual([...r.topkIdx], [0, 3]);
    close(r.weights.f32(), [s[0]! * 4, s[3]! * 4]);
    close(r.scores.f32(), s);
  });

  it('greedy: top-K over all experts, no group limit', () => {
    const rc: RouterConfig = { ...V3, scoring: 'softmax', method: 'greedy', nGroup: 1, topkGroup: 1, normTopkProb: false, scalingFactor: 2 };
    const r = route([0.5, 3, 0, 2.5, 0, 0, 0, 1], rc);
    assert.deepEqual([...r.topkIdx], [1, 3]);
  });

  it('gate weights are differentiable w.r.t. the router weight and the input', () => {
    const E = 8;
    const D = 5;
    const x = Tensor.from(Array.from({ length: 3 * D }, (_, i) => Math.sin(1.3 * i)), [3, D]);
    const w = Tensor.from(Array.from({ length: E * D }, (_, i) => Math.cos(0.7 * i)), [E, D]);
    gradcheck((xx, ww) => routeTokens(xx!, ww!, null, V3).weights, [x, w], { name: 'routeTokens weights' });
    gradcheck((xx, ww) => routeTokens(xx!, ww!, null, V3).scores, [x, w], { name: 'routeTokens scores' });
  });
});

describe('selectExperts: one-pass top-k', () => {
  /** The selection-rounds rule (the implementation before the one-pass top-k, kept as the oracle):
   * round j takes the first allowed, untaken expert unless a later one is strictly larger. */
  function oracle(s: Float32Array, bias: Float32Array | null, tokens: number, rc: RouterConfig): Int32Array {
    const E = rc.experts, K = rc.topK, per = E / rc.nGroup;
    const out = new Int32Array(tokens * K);
    const top = (v: number[], k: number, allowed: boolean[] | null): number[] => {
      const r: number[] = [];
      for (let j = 0; j < k; j++) {
        let best = -1, bestV = -Infinity;
        for (let i = 0; i < v.length; i++) {
          if ((allowed && !allowed[i]) || r.includes(i)) continue;
          if (best < 0 || v[i]! > bestV) [best, bestV] = [i, v[i]!];
        }
        r.push(best);
      }
      return r;
    };
    for (let t = 0; t < tokens; t++) {
      const c = Array.from({ length: E }, (_, e) => s[t * E + e]! + (bias ? bias[e]! : 0));
      let allowed: boolean[] | null = null;
      if (rc.method !== 'greedy' && rc.nGroup > 1 && rc.topkGroup < rc.nGroup) {
        const gs = Array.from({ length: rc.nGroup }, (_, g) => {
          const xs = c.slice(g * per, (g + 1) * per);
          let m1 = -Infinity, m2 = -Infinity;
          for (const x of xs) if (x > m1) [m2, m1] = [m1, x]; else if (x > m2) m2 = x;
          return rc.method === 'noaux_tc' ? m1 + m2 : m1;
        });
        const keep = top(gs, rc.topkGroup, null);
        allowed = c.map((_, e) => keep.includes(Math.floor(e / per)));
      }
      out.set(top(c, K, allowed), t * K);
    }
    return out;
  }

  it('chooses exactly what the selection rounds chose: ties, -Infinity, NaN, every method', () => {
    let seed = 7;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const methods: Array<[RouterConfig['method'], number, number, number, number]> = [
      ['noaux_tc', 16, 4, 4, 2], ['noaux_tc', 12, 3, 3, 1], ['group_limited_greedy', 16, 6, 8, 3], ['greedy', 10, 3, 1, 1], ['noaux_tc', 8, 8, 2, 2]];
    let checked = 0;
    for (const [method, E, K, nGroup, topkGroup] of methods) {
      const rc: RouterConfig = { experts: E, topK: K, nGroup, topkGroup, scoring: 'sigmoid', method, normTopkProb: true, scalingFactor: 1 };
      const N = 300;
      // few distinct values: many ties; some -Infinity; a few NaN tokens
      const s = Float32Array.from({ length: N * E }, () => Math.floor(rnd() * 5) / 4);
      for (let i = 0; i < N * E; i += 37) s[i] = -Infinity;
      for (let i = 5; i < N * E; i += 401) s[i] = NaN;
      for (const bias of [null, Float32Array.from({ length: E }, (_, e) => (e % 3) * 0.25)]) {
        const got = selectExperts(s, bias, N, rc);
        const want = oracle(s, bias, N, rc);
        assert.deepEqual([...got.topkIdx], [...want], `${method} E${E} K${K} bias ${bias ? 'yes' : 'no'}`);
        const load = new Int32Array(E);
        for (const e of want) if (e >= 0) load[e]!++;
        assert.deepEqual([...got.load], [...load]);
        checked++;
      }
    }
    assert.equal(checked, 10);
  });
});
