/**
 * What `dsv3 experiment mtp` measures on a trained model with MTP modules (DeepSeek-V3 report
 * §2.2 and §5.4.3):
 *
 * 1. Acceptance of the depth-1 draft on held-out text, teacher-forced: over validation sequences
 *    t_0 .. t_S, the main model's greedy token for position i + 2 is g_{i+2} = argmax of its logits
 *    at i + 1; the depth-1 MTP module, from the main hidden state h_i and the token t_{i+1}
 *    (eq. 21), predicts position i + 2 as m_{i+2} = argmax of its logits at i (eq. 23). The draft
 *    would be accepted where m_{i+2} = g_{i+2}: acceptance = the share of positions
 *    i = 0 .. S − 2 where they agree (in self-speculative decoding t_{i+1} is itself the main
 *    model's greedy token; on held-out text it is the text's). Beside it, each head's top-1
 *    accuracy against the text.
 * 2. Self-speculative greedy decoding at batch 1 (src/inference/speculative.ts) against plain
 *    greedy decoding on the same fast engine (DecodeSession), prompts from the validation split:
 *    every timed generation of both is checked token for token (identical output is the
 *    method's contract), the two are interleaved (alternating which goes first) and the speed-up
 *    is the median over (prompt, repetition) of plain decode time / speculative decode time
 *    (prefill excluded from both; the same n − 1 tokens after the prefill's token).
 */
import { validationBatches } from '../data/dataset.js';
import { noGrad } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { DecodeSession } from '../inference/decode-session.js';
import { argmax } from '../inference/sampling.js';
import { SpeculativeDecoder } from '../inference/speculative.js';
import type { DeepseekV3 } from '../model/model.js';

export interface Acceptance {
  /** Share of positions where the depth-1 module's top-1 equals the main model's greedy token one step later. */
  acceptance: number;
  /** Top-1 accuracy against the text: the main head (next token) and the depth-1 module (the token after). */
  mainTop1: number;
  mtpTop1: number;
  positions: number;
}

/**
 * The counts of one batch from the heads' top-1 tokens: `main` [B, S] (main[r, j] predicts
 * position j + 1), `draft` [B, S − 1] (draft[r, i] predicts position i + 2) and the text [B, S]:
 * agree = #{i : draft[r, i] = main[r, i + 1]}, and each head's hits against the text.
 */
export function countAgreement(main: Int32Array, draft: Int32Array, text: Int32Array, B: number, S: number): { agree: number; mainOk: number; mtpOk: number; n: number } {
  let agree = 0, mainOk = 0, mtpOk = 0, n = 0;
  for (let r = 0; r < B; r++) {
    for (let i = 0; i + 2 < S; i++) {
      const g = main[r * S + i + 1]!;
      const m = draft[r * (S - 1) + i]!;
      const t = text[r * S + i + 2]!;
      if (g === m) agree++;
      if (g === t) mainOk++;
      if (m === t) mtpOk++;
      n++;
    }
  }
  return { agree, mainOk, mtpOk, n };
}

/** Row-wise argmax of logits [rows, V]. */
function top1(logits: Float32Array, rows: number, V: number): Int32Array {
  return Int32Array.from({ length: rows }, (_, r) => argmax(logits, r * V, V));
}

/** Acceptance of the depth-1 draft over up to `maxBatches` validation batches of [batch, seq + 1] tokens. */
export function draftAcceptance(model: DeepseekV3, val: Int32Array, batch: number, seq: number, maxBatches: number): Acceptance {
  const V = model.cfg.vocab_size;
  const c = { agree: 0, mainOk: 0, mtpOk: 0, n: 0 };
  let k = 0;
  for (const b of validationBatches(val, batch, seq)) {
    if (k++ >= maxBatches) break;
    const S = b.seqLen + 1;
    const B = b.batchSize;
    noGrad(() => {
      const ids = Tensor.fromI32(b.tokens, [B, S]);
      const f = model.forward(ids);
      const mtp = model.mtpForward(f.hidden, ids)[0]!.logits!;
      const x = countAgreement(top1(f.logits.contiguous().f32(), B * S, V), top1(mtp.contiguous().f32(), B * (S - 1), V), b.tokens, B, S);
      c.agree += x.agree;
      c.mainOk += x.mainOk;
      c.mtpOk += x.mtpOk;
      c.n += x.n;
    });
  }
  const n = c.n;
  return { acceptance: n ? c.agree / n : NaN, mainTop1: n ? c.mainOk / n : NaN, mtpTop1: n ? c.mtpOk / n : NaN, positions: n };
}

export interface SpeedUp {
  /** Median over (prompt, repetition) of plain / speculative decode time. */
  speedup: number;
  plainTokensPerS: number;
  specTokensPerS: number;
  /** Accepted / drafted over the timed speculative generations. */
  genAcceptance: number;
  /** 1 when every timed speculative generation equalled plain greedy decoding token for token, else 0. */
  identical: number;
  /** Plain ms per token; speculative ms per verification forward (2 rows) and per draft step. */
  plainMsPerToken: number;
  msPerVerify: number;
  msPerDraft: number;
  /** (1 + 0.85) · plain ms per token / (verify + draft): the speed-up these step costs give at the paper's acceptance. */
  projectedAt085: number;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** See the module comment: `prompts` validation prompts of `promptLen` tokens, `n` tokens each, `reps` timed repetitions (after one untimed). */
export function speculativeSpeedUp(model: DeepseekV3, val: Int32Array, o: { prompts: number; promptLen: number; n: number; reps: number }): SpeedUp {
  const maxLen = o.promptLen + o.n;
  const plain = new DecodeSession(model, { maxLen });
  const spec = new SpeculativeDecoder(model, { maxLen, depth: 1 }); // one draft per forward: the formulas below assume it
  const stride = Math.max(o.promptLen, Math.floor((val.length - o.promptLen) / o.prompts));
  const ratios: number[] = [];
  const plainMs: number[] = [];
  const specMs: number[] = [];
  let drafted = 0, accepted = 0, forwards = 0, verifyMs = 0, draftMs = 0;
  let identical = 1;
  const runPlain = (prompt: Int32Array): { ms: number; ids: number[] } => {
    plain.reset();
    let l = plain.prefill(prompt, prompt.length);
    const ids = [argmax(l, 0, l.length)];
    const t0 = performance.now();
    const tok = new Int32Array(1);
    while (ids.length < o.n) {
      tok[0] = ids[ids.length - 1]!;
      l = plain.step(tok);
      ids.push(argmax(l, 0, l.length));
    }
    return { ms: performance.now() - t0, ids };
  };
  for (let p = 0; p < o.prompts; p++) {
    const off = Math.min(p * stride, val.length - o.promptLen);
    const prompt = val.slice(off, off + o.promptLen);
    runPlain(prompt);
    spec.generate(prompt, o.n);
    for (let r = 0; r < o.reps; r++) {
      const timeSpec = (): { ms: number; ids: number[] } => {
        const g = spec.generate(prompt, o.n);
        drafted += g.drafted;
        accepted += g.accepted;
        forwards += g.mainForwards;
        verifyMs += g.verifyMs;
        draftMs += g.draftMs;
        return { ms: g.decodeMs, ids: Array.from(g.ids.subarray(o.promptLen)) };
      };
      // alternate which goes first, so neither always runs on a warmer cache
      const [a, s] = r % 2 === 0 ? [runPlain(prompt), timeSpec()] : ((): [{ ms: number; ids: number[] }, { ms: number; ids: number[] }] => {
        const s1 = timeSpec();
        return [runPlain(prompt), s1];
      })();
      if (a.ids.length !== s.ids.length || a.ids.some((t, i) => t !== s.ids[i])) identical = 0;
      ratios.push(a.ms / s.ms);
      plainMs.push(a.ms);
      specMs.push(s.ms);
    }
  }
  const steps = o.n - 1;
  const plainPerTok = median(plainMs) / steps;
  const verify = verifyMs / Math.max(1, forwards);
  const draft = draftMs / Math.max(1, forwards);
  return {
    speedup: median(ratios),
    plainTokensPerS: steps / (median(plainMs) / 1000),
    specTokensPerS: steps / (median(specMs) / 1000),
    genAcceptance: drafted ? accepted / drafted : NaN,
    identical,
    plainMsPerToken: plainPerTok,
    msPerVerify: verify,
    msPerDraft: draft,
    projectedAt085: (1.85 * plainPerTok) / (verify + draft),
  };
}
