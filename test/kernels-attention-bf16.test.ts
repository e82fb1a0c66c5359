// BF16 attention core (issue 13; native/src/isa/attention_bf16.c): the native kernel against
// the TypeScript oracle (reference/attention-bf16.ts: the same bf16 roundings, float64 sums)
// within a summation-order tolerance derived below, on the VDPBF16PS path and on the widened-
// pair path (gemmAllowDpbf16(false)); the tolerance has teeth (the float32 kernel fails it); a
// finite-difference gradient check of the op; and which kernels a bf16 / fp8 / fp32 step runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backward } from '../src/engine/autograd.js';
import { withBackend } from '../src/engine/backend.js';
import type { AttentionParams, Kernels } from '../src/engine/kernels.js';
import { loadNativeKernels, nativeAddon, nativeHasBf16Dot } from '../src/engine/native.js';
import { bf16 } from '../src/engine/reference/attention-bf16.js';
import { referenceKernels as ref } from '../src/engine/reference/index.js';
import * as ops from '../src/engine/ops/index.js';
import { Tensor } from '../src/engine/tensor.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { forwardLosses } from '../src/train/train-step.js';
import { randData, rng } from './helpers/random.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

const nat = loadNativeKernels();
const required = process.env.CI !== undefined || process.env.DSV3_REQUIRE_NATIVE === '1';
const U = 2 ** -24; // float32 unit roundoff
const FLIP = 2 ** -7; // one bf16 ulp relative to the value it rounds (8-bit significand)

interface Case {
  B: number; T: number; H: number; Hk: number; S: number; dqk: number; dv: number; off: number;
  perBatch?: boolean; pad?: number; // pad: extra elements between heads (strided views)
}

function params(c: Case): AttentionParams {
  const pq = c.dqk + (c.pad ?? 0), pk = c.dqk + (c.pad ?? 0), pv = c.dv + (c.pad ?? 0);
  return {
    batch: c.B, heads: c.H, kvHeads: c.Hk, tq: c.T, tk: c.S, dqk: c.dqk, dv: c.dv, scale: 1 / Math.sqrt(c.dqk), causalOffset: c.off,
    causalOffsets: c.perBatch ? Int32Array.from({ length: c.B }, (_, b) => c.off - b) : null,
    qStrides: [c.T * c.H * pq, c.H * pq, pq], kStrides: [c.S * c.Hk * pk, c.Hk * pk, pk], vStrides: [c.S * c.Hk * pv, c.Hk * pv, pv],
    oStrides: [c.T * c.H * c.dv, c.H * c.dv, c.dv],
  };
}

const at = (s: readonly [number, number, number], b: number, t: number, h: number): number => b * s[0] + t * s[1] + h * s[2];

/**
 * Per-element tolerances of the native kernel against the oracle, from float32 error bounds
 * (u = 2^-24; a sum of n terms in any order is within n u Σ|terms| of the exact sum):
 *  - tight (summation order): forward out = Σ_j bf16(P_j) v_j / l, both sums over n visible
 *    keys: (2n + 8) u T + δS T, T = Σ_j |bf16(P_j) v_j| / l, where δS = (dqk + 2) u scale
 *    max_j Σ_d |q_d k_jd| bounds the float32 error of a score, which moves l (relatively) but
 *    not bf16(P_j) unless it crosses a rounding midpoint; lse: (n + 4) u + δS + u |lse|.
 *    Backward (same lse given to both): dv sums rows (n = rows seeing the key) of bf16(P)
 *    bf16(dO); dq, dk sum bf16(dS) times bf16(k) / bf16(q), and bf16(dS) is equal unless a
 *    rounding midpoint is crossed: (n + 4) u Σ|terms|.
 *  - a midpoint crossing ("flip") of one rounded P or dS changes one term by at most one bf16
 *    ulp (<= 2^-7 of it). They are rare (the pre-rounding values differ by ~1e-7 relative), so
 *    at most 1% of the elements may exceed the tight bound, and none by more than two flips of
 *    its largest term.
 */
function tolerances(p: AttentionParams, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array, dout: Float32Array) {
  const { batch, heads, kvHeads, tq, tk, dqk, dv, scale } = p;
  const off = (b: number): number => (p.causalOffsets ? p.causalOffsets[b]! : p.causalOffset);
  const tOut = new Float64Array(out.length), fOut = new Float64Array(out.length), tLse = new Float64Array(lse.length);
  const tDq = new Float64Array(q.length), fDq = new Float64Array(q.length);
  const tDk = new Float64Array(k.length), fDk = new Float64Array(k.length), tDv = new Float64Array(v.length), fDv = new Float64Array(v.length);
  const nRows = new Float64Array(batch * kvHeads * tk);
  for (let b = 0; b < batch; b++) for (let h = 0; h < heads; h++) for (let i = 0; i < tq; i++) {
    const hk = kvHeads === 1 ? 0 : h, last = Math.min(tk - 1, i + off(b));
    for (let j = 0; j <= last; j++) nRows[(b * kvHeads + hk) * tk + j]! += 1;
  }
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const hk = kvHeads === 1 ? 0 : h;
      for (let i = 0; i < tq; i++) {
        const qo = at(p.qStrides, b, i, h), oo = at(p.oStrides, b, i, h), li = (b * heads + h) * tq + i;
        const last = Math.min(tk - 1, i + off(b));
        if (last < 0) continue;
        const n = last + 1;
        const s = new Float64Array(n), mag = new Float64Array(n);
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          const ko = at(p.kStrides, b, j, hk);
          let d0 = 0, a0 = 0;
          for (let d = 0; d < dqk; d++) { const t = bf16(q[qo + d]!) * bf16(k[ko + d]!); d0 += t; a0 += Math.abs(t); }
          s[j] = d0 * scale;
          mag[j] = a0 * scale;
          m = Math.max(m, s[j]!);
        }
        const dS = (dqk + 2) * U * Math.max(...mag);
        let l = 0;
        for (let j = 0; j < n; j++) l += Math.exp(s[j]! - m);
        let dsum = 0, dmag = 0;
        for (let e = 0; e < dv; e++) { dsum += bf16(dout[oo + e]!) * out[oo + e]!; dmag += Math.abs(bf16(dout[oo + e]!) * out[oo + e]!); }
        tLse[li] = (n + 4) * U + dS + U * Math.abs(lse[li]!);
        for (let e = 0; e < dv; e++) {
          let T = 0, F = 0;
          for (let j = 0; j < n; j++) {
            const t = Math.abs(bf16(Math.exp(s[j]! - m)) * bf16(v[at(p.vStrides, b, j, hk) + e]!)) / l;
            T += t;
            F = Math.max(F, t);
          }
          tOut[oo + e] = ((2 * n + 8) * U + dS) * T;
          fOut[oo + e] = 2 * FLIP * F;
        }
        for (let j = 0; j < n; j++) {
          const ko = at(p.kStrides, b, j, hk), vo = at(p.vStrides, b, j, hk);
          const pr = Math.exp(s[j]! - lse[li]!);
          let dp = 0, dpm = 0;
          for (let e = 0; e < dv; e++) { const t = bf16(dout[oo + e]!) * bf16(v[vo + e]!); dp += t; dpm += Math.abs(t); }
          const ds = Math.abs(bf16(pr * (dp - dsum) * scale));
          // a dS within this of a midpoint may flip: P's relative error and the float32 errors of dP and D
          const dsErr = pr * scale * (Math.abs(dp - dsum) * (dS + 4 * U) + (dv + 2) * U * (dpm + dmag));
          const nr = nRows[(b * kvHeads + hk) * tk + j]!;
          const pb = bf16(pr);
          for (let e = 0; e < dv; e++) {
            const t = Math.abs(pb * bf16(dout[oo + e]!));
            tDv[vo + e]! += (nr + 4) * U * t;
            fDv[vo + e] = Math.max(fDv[vo + e]!, 2 * FLIP * t);
          }
          for (let d = 0; d < dqk; d++) {
            const kq = Math.abs(bf16(k[ko + d]!)), qq = Math.abs(bf16(q[qo + d]!));
            tDq[qo + d]! += (n + 4) * U * ds * kq + dsErr * kq;
            fDq[qo + d] = Math.max(fDq[qo + d]!, 2 * FLIP * ds * kq);
            tDk[ko + d]! += (nr + 4) * U * ds * qq + dsErr * qq;
            fDk[ko + d] = Math.max(fDk[ko + d]!, 2 * FLIP * ds * qq);
          }
        }
      }
    }
  }
  return { tOut, fOut, tLse, tDq, fDq, tDk, fDk, tDv, fDv };
}

/** Checks got vs want at the listed element positions; returns the fraction beyond the tight bound. */
function check(name: string, got: Float32Array, want: Float32Array, tight: Float64Array, flip: Float64Array | null, idx: number[]): number {
  let over = 0;
  for (const i of idx) {
    const d = Math.abs(got[i]! - want[i]!);
    const t = tight[i]! + 1e-30;
    if (d > t) {
      over++;
      const f = flip ? flip[i]! : 0;
      assert.ok(d <= t + f, `${name}[${i}]: native ${got[i]} vs oracle ${want[i]}: |diff| ${d} > tight ${t} + two flips ${f}`);
    }
  }
  return over / Math.max(1, idx.length);
}

/** Element offsets of a [B, T, H, d] layout. */
function positions(s: readonly [number, number, number], B: number, T: number, H: number, d: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) for (let e = 0; e < d; e++) out.push(at(s, b, t, h) + e);
  return out;
}

const CASES: Case[] = [
  { B: 1, T: 5, H: 2, Hk: 2, S: 5, dqk: 7, dv: 5, off: 0 }, // odd dims: zero-padded pairs
  { B: 2, T: 40, H: 3, Hk: 3, S: 40, dqk: 48, dv: 32, off: 0 },
  { B: 2, T: 70, H: 2, Hk: 1, S: 90, dqk: 17, dv: 9, off: 20 }, // shared kv head (absorbed form), prefix
  { B: 1, T: 130, H: 2, Hk: 2, S: 130, dqk: 48, dv: 32, off: 0 }, // odd key tiles, key splits (few (b, h))
  { B: 8, T: 64, H: 8, Hk: 8, S: 64, dqk: 48, dv: 32, off: 0 }, // whole (b, h) tasks
  { B: 3, T: 3, H: 4, Hk: 1, S: 200, dqk: 33, dv: 31, off: 197, perBatch: true }, // per-batch offsets
  { B: 2, T: 33, H: 2, Hk: 2, S: 33, dqk: 24, dv: 16, off: -3, pad: 5 }, // strided views, rows with no key
];

function runCase(k: Kernels, c: Case, seed: number) {
  const p = params(c);
  const r = rng(seed);
  const n = (s: readonly [number, number, number], B: number) => s[0] * B;
  const q = randData(r, n(p.qStrides, c.B), 1.5), kk = randData(r, n(p.kStrides, c.B), 1.5), v = randData(r, n(p.vStrides, c.B));
  const dout = randData(r, c.B * c.T * c.H * c.dv);
  const out = new Float32Array(dout.length), lse = new Float32Array(c.B * c.H * c.T);
  k.attentionBf16(p, q, kk, v, out, lse);
  const outR = new Float32Array(out.length), lseR = new Float32Array(lse.length);
  ref.attentionBf16(p, q, kk, v, outR, lseR);
  const g = () => [new Float32Array(q.length), new Float32Array(kk.length), new Float32Array(v.length)] as const;
  const [dq, dk, dv] = g(), [dqR, dkR, dvR] = g();
  k.attentionBackwardBf16(p, q, kk, v, out, lse, dout, dq, dk, dv);
  ref.attentionBackwardBf16(p, q, kk, v, out, lse, dout, dqR, dkR, dvR);
  return { p, q, kk, v, dout, out, lse, outR, lseR, dq, dk, dv, dqR, dkR, dvR };
}

const VARIANTS: { dp: boolean; isa: 'avx512' | 'avx2' | 'scalar' | null; what: string }[] = [
  { dp: true, isa: null, what: 'VDPBF16PS where the CPU has it' },
  { dp: false, isa: null, what: 'widened pairs, no VDPBF16PS' },
  { dp: false, isa: 'avx2', what: 'the AVX2 copy' },
  { dp: false, isa: 'scalar', what: 'the scalar copy' },
];
for (const { dp, isa, what } of VARIANTS) {
  test(`attentionBf16 native = oracle within summation-order tolerance (${what})`, (t) => {
    if (!nat) {
      if (required) assert.fail('native addon did not load');
      t.skip('native addon not available');
      return;
    }
    const addon = nativeAddon()!;
    const isa0 = addon.info().isa as 'avx512' | 'avx2' | 'scalar';
    if (isa && !addon.setIsa(isa)) {
      t.skip(`${isa} not available here`);
      return;
    }
    const prev = addon.gemmAllowDpbf16(dp);
    try {
      CASES.forEach((c, ci) => {
        const r = runCase(nat, c, 100 + ci);
        const tol = tolerances(r.p, r.q, r.kk, r.v, r.out, r.lse, r.dout);
        const { p } = r;
        const oPos = positions(p.oStrides, c.B, c.T, c.H, c.dv);
        const lPos = Array.from({ length: r.lse.length }, (_, i) => i);
        for (const i of lPos) {
          if (r.lseR[i] === -Infinity) assert.equal(r.lse[i], -Infinity);
        }
        const fin = lPos.filter((i) => Number.isFinite(r.lseR[i]!));
        const fr = [
          check(`case ${ci} out`, r.out, r.outR, tol.tOut, tol.fOut, oPos),
          check(`case ${ci} lse`, r.lse, r.lseR, tol.tLse, null, fin),
          check(`case ${ci} dq`, r.dq, r.dqR, tol.tDq, tol.fDq, positions(p.qStrides, c.B, c.T, c.H, c.dqk)),
          check(`case ${ci} dk`, r.dk, r.dkR, tol.tDk, tol.fDk, positions(p.kStrides, c.B, c.S, c.Hk, c.dqk)),
          check(`case ${ci} dv`, r.dv, r.dvR, tol.tDv, tol.fDv, positions(p.vStrides, c.B, c.S, c.Hk, c.dv)),
        ];
        t.diagnostic(`case ${ci}: fraction beyond the tight bound (out, lse, dq, dk, dv) ${fr.map((f) => f.toFixed(4)).join(' ')}`);
        for (const f of fr) assert.ok(f <= 0.01, `case ${ci}: ${(f * 100).toFixed(2)}% of the elements beyond the tight bound`);
      });
    } finally {
      addon.gemmAllowDpbf16(prev);
      addon.setIsa(isa0);
    }
  });
}

test('the tolerance has teeth: the float32 attention kernel fails it (it is not bf16 attention)', (t) => {
  const k = nat ?? ref;
  if (!nat && required) assert.fail('native addon did not load');
  const c = CASES[4]!;
  const r = runCase(k, c, 104);
  const tol = tolerances(r.p, r.q, r.kk, r.v, r.out, r.lse, r.dout);
  const out32 = new Float32Array(r.out.length), lse32 = new Float32Array(r.lse.length);
  k.attention(r.p, r.q, r.kk, r.v, out32, lse32);
  const dq = new Float32Array(r.q.length), dk = new Float32Array(r.kk.length), dv = new Float32Array(r.v.length);
  k.attentionBackward(r.p, r.q, r.kk, r.v, r.out, r.lse, r.dout, dq, dk, dv);
  const frac = (got: Float32Array, want: Float32Array, tight: Float64Array): number => {
    let n = 0;
    for (let i = 0; i < got.length; i++) if (Math.abs(got[i]! - want[i]!) > tight[i]! + 1e-30) n++;
    return n / got.length;
  };
  for (const [name, f] of [['out', frac(out32, r.outR, tol.tOut)], ['dq', frac(dq, r.dqR, tol.tDq)], ['dk', frac(dk, r.dkR, tol.tDk)], ['dv', frac(dv, r.dvR, tol.tDv)]] as const) {
    assert.ok(f > 0.5, `${name}: only ${(f * 100).toFixed(1)}% of the float32 kernel's elements are beyond the bf16 tight bound`);
  }
  t.diagnostic(`native bf16 kernel: ${nativeHasBf16Dot() ? 'VDPBF16PS' : 'widened pairs'}`);
});

test('finite differences: the bf16 attention gradients match central differences of the exact op within bf16 error', (t) => {
  // MLA naive form (mlaAttention, the training op): q [B,T,H,dn+dr], kv_b output [B,S,H,dn+dv], k^R [B,S,1,dr].
  const [B, T, H, dn, dr, dv] = [1, 6, 2, 6, 4, 5];
  const r = rng(77);
  const grid = (n: number, s: number) => randData(r, n, s).map(bf16); // bf16-representable inputs: no input rounding
  const q0 = grid(B * T * H * (dn + dr), 1.2), kv0 = grid(B * T * H * (dn + dv), 1.2), pe0 = grid(B * T * dr, 1.2);
  const w = randData(r, B * T * H * dv);
  const scale = 1 / Math.sqrt(dn + dr);
  const loss = (q: Float32Array, kv: Float32Array, pe: Float32Array, bf: boolean): number => {
    const o = ops.mlaAttention(new Tensor(q, [B, T, H, dn + dr], 'f32'), new Tensor(kv, [B, T, H, dn + dv], 'f32'), new Tensor(pe, [B, T, 1, dr], 'f32'), { scale, bf16: bf });
    const od = o.f32();
    let s = 0;
    for (let i = 0; i < od.length; i++) s += od[i]! * w[i]!;
    return s;
  };
  // analytic bf16 gradients (the backend under test)
  const leaf = (x: Float32Array, shape: number[]): Tensor => {
    const t = new Tensor(x.slice(), shape, 'f32');
    t.requiresGrad = true;
    return t;
  };
  const qt = leaf(q0, [B, T, H, dn + dr]), kt = leaf(kv0, [B, T, H, dn + dv]), pt = leaf(pe0, [B, T, 1, dr]);
  const o = ops.mlaAttention(qt, kt, pt, { scale, bf16: true });
  backward(ops.sum(ops.mul(o, new Tensor(w, o.shape, 'f32'))));
  // central differences of the exact (float64-summed reference) op
  const h = 1e-3;
  withBackend('reference', () => {
    for (const [name, x, gT] of [['q', q0, qt], ['kv', kv0, kt], ['kPe', pe0, pt]] as const) {
      const g = gT.grad!.f32();
      let num = 0, den = 0, bad = 0;
      for (let i = 0; i < x.length; i++) {
        const xp = x.slice(), xm = x.slice();
        xp[i] = x[i]! + h;
        xm[i] = x[i]! - h;
        const args = (a: Float32Array): [Float32Array, Float32Array, Float32Array] => (name === 'q' ? [a, kv0, pe0] : name === 'kv' ? [q0, a, pe0] : [q0, kv0, a]);
        const fd = (loss(...args(xp), false) - loss(...args(xm), false)) / (2 * h);
        num += (g[i]! - fd) ** 2;
        den += fd * fd;
        // per element: bf16 error of P, dS and dout (a few 2^-8) times the element's scale, plus FD noise
        if (Math.abs(g[i]! - fd) > 0.03 * Math.abs(fd) + 2e-3) bad++;
      }
      const rel = Math.sqrt(num / den);
      t.diagnostic(`d${name}: relative L2 error ${rel.toExponential(2)}, ${bad} elements beyond 3% + 2e-3`);
      assert.ok(rel < 0.02, `d${name}: relative L2 error of the bf16 gradient vs central differences ${rel}`);
      assert.ok(bad <= Math.ceil(0.02 * x.length), `d${name}: ${bad} of ${x.length} elements off`);
    }
  });
});

test('which attention kernels a training step runs: bf16 and fp8 the BF16 core (where it pays), fp32 the float32 one', () => {
  const base = nat ?? ref;
  const CFG = parseModelConfig(tinyConfigJson(), 'tiny');
  const r = rng(3);
  const toks = Int32Array.from({ length: 2 * 17 }, () => Math.floor(r() * CFG.vocab_size));
  const lossOpts = { mtpLambda: 0.3, balanceAlpha: 1e-4, balance: 'aux-free' } as const;
  for (const precision of ['fp32', 'bf16', 'fp8'] as const) {
    const calls: Record<string, number> = {};
    const count = <F extends (...a: never[]) => void>(name: string, f: F): F => ((...a: Parameters<F>) => {
      calls[name] = (calls[name] ?? 0) + 1;
      return f(...a);
    }) as F;
    const spy: Kernels = {
      ...base,
      attention: count('attention', base.attention),
      attentionBackward: count('attentionBackward', base.attentionBackward),
      attentionBf16: count('attentionBf16', base.attentionBf16),
      attentionBackwardBf16: count('attentionBackwardBf16', base.attentionBackwardBf16),
    };
    withBackend(spy, () => {
      const model = DeepseekV3.randomInit(CFG, 5);
      const f = forwardLosses(model, toks, { ...lossOpts, precision }, 2);
      backward(f.terms.total);
    });
    // the BF16 core runs under bf16 / fp8 unless the native kernels lack VDPBF16PS (model/mla.ts)
    const bf = precision !== 'fp32' && (spy.name !== 'native' || nativeHasBf16Dot());
    const want = bf ? ['attentionBf16', 'attentionBackwardBf16'] : ['attention', 'attentionBackward'];
    assert.deepEqual(Object.keys(calls).sort(), [...want].sort(), precision);
    assert.ok(calls[want[0]!]! >= CFG.num_hidden_layers, `${precision}: ${JSON.stringify(calls)}`);
  }
});
