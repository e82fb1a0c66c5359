/**
 * Self-speculative decoding with the MTP modules as the draft model (paper section 5.4.3: "MTP
 * modules ... can be repurposed for speculative decoding"; the second token is accepted 85-90 %
 * of the time on the released model, 1.8x the tokens per second), chained over D >= 1 modules.
 *
 * Module k (section 2.2, Eqs. 21-23) at position i reads h^{k-1}_i (k = 1: the main model's
 * final-norm hidden; else module k-1's output) and the token t_{i+k}, and predicts t_{i+k+1}.
 * State before a round (one sequence): the main model has cached positions 0 .. n-1 and the
 * next token t_n is known (emitted, not yet cached). One round:
 *   1. draft: for k = 1 .. K, module k runs its rows L_k .. n-1 (L_k: its first row not yet
 *      final) in one forward into its own cache slot, with t_{i+k} taken from the drafts
 *      d_1 .. d_{k-1} where i + k > n; its logits at row n-1 propose d_k for t_{n+k};
 *   2. verify: the main model runs [t_n, d_1 .. d_K] at positions n .. n+K in one forward
 *      (K+1 query rows over the latent cache); row j's logits give the true t_{n+j+1};
 *   3. accept the longest prefix d_1 .. d_a that matches, plus the main model's token at row a
 *      (a+1 tokens per main forward); the cache keeps positions up to n+a (rows written past
 *      them are overwritten later). Module k's rows that read only accepted drafts are final;
 *      the rows that read a rejected draft are recomputed in the next round (L_k = n - k + 1 + a,
 *      at most n).
 * Greedy: the tokens are exactly the main model's argmax at every position; the drafts only
 * decide how many of them one main forward produces.
 *
 * With a Sampler (temperature, top-k/p, min-p, penalties), speculative sampling (Leviathan et
 * al. 2023; Chen et al. 2023), sequentially along the chain: d_k is drawn from module k's
 * processed distribution q_k; row j keeps d_{j+1} with probability min(1, p_j(d)/q_{j+1}(d))
 * under the main model's p_j (given the tokens kept so far), else draws from max(0, p_j − q_{j+1})
 * renormalised and stops; after K kept drafts the next token is drawn from p_K. Every token is
 * distributed exactly as in plain sampling (not the same draws for a seed). q_k is computed with
 * the history of kept tokens (not the drafts before it): any q gives the exact distribution.
 */
import { DsvError } from '../errors.js';
import type { SpeculativeOptions, SpeculativeResult } from './speculative-options.js';
import type { DeepseekV3 } from '../model/model.js';
import { DecodeSession } from './decode-session.js';
import { argmax, draw, type Sampler } from './sampling.js';
import type { FinishReason } from './generate.js';
import type { PhaseProfiler } from './profile.js';

export type { SpeculativeOptions, SpeculativeResult } from './speculative-options.js';

/** Deepest chained draft (`chain`): K drafts make a K+1-row verification forward. */
export const MAX_CHAIN_DEPTH = 8;

/** Most positions the MTP modules may lag the main model during plain steps (their hidden-row
 * rings hold this many more rows); past it they catch up while still plain. */
export const CATCH_UP_GAP = 256;

export class SpeculativeDecoder {
  readonly session: DecodeSession;
  /** Modules chained per round (the draft depth K). */
  readonly depth: number;
  /** Per depth k = 0 .. K: a ring of the last R hidden rows h^k by position (row i at i mod R). */
  private readonly rings: Float32Array[];
  private readonly R: number;
  /** Per module k = 1 .. K (index k-1): its first row not yet final (L_k). */
  private readonly final: Int32Array;
  private readonly rowIds: Int32Array;
  /** The verification ids [t_n, d_1 .. d_K] and the drafts' distributions q_k (with a sampler). */
  private readonly verifyIds: Int32Array;
  private readonly qs: Float64Array[];
  private readonly p: Float64Array;
  /** The main cache's input tokens (for `reuse`): positions 0 .. cachedLen-1. */
  private readonly cachedTokens: Int32Array;
  private cachedLen = 0;

  constructor(readonly model: DeepseekV3, opts: { maxLen: number; chunk?: number; depth?: number; profiler?: PhaseProfiler;
    /** Weights of the draft path (the MTP modules and their head): 'bf16' (default) runs bf16
     * copies of float32 weights (draft-bf16.ts: half the bytes; the output is unchanged, see
     * there), 'exact' the model's own. */
    draft?: 'bf16' | 'exact';
    /** Allow a draft depth past the model's modules (up to MAX_CHAIN_DEPTH): the last module drafts
     * again on its own output (its hidden h^k and its draft as the next input), each depth in its
     * own cache slot, as vLLM / SGLang chain DeepSeek-V3's one MTP module. Output unchanged. */
    chain?: boolean; }) {
    if (model.mtp.length === 0) throw new DsvError('speculative decoding needs the MTP module (num_nextn_predict_layers >= 1, loaded with mtp: true)');
    const K = opts.depth ?? model.mtp.length;
    const most = opts.chain === true ? Math.max(MAX_CHAIN_DEPTH, model.mtp.length) : model.mtp.length;
    if (!(Number.isInteger(K) && K >= 1 && K <= most)) {
      throw new DsvError(`speculative: draft depth ${K} is not in [1, ${most}] (${opts.chain === true ? 'chained drafts' : "the model's MTP modules"})`);
    }
    this.depth = K;
    const chunk = Math.max(K + 1, opts.chunk ?? 64);
    this.session = new DecodeSession(model, { maxLen: opts.maxLen, mtp: K, chunk, logitRows: K + 1, draftBf16: (opts.draft ?? 'bf16') === 'bf16', mtpChain: opts.chain === true, ...(opts.profiler ? { profiler: opts.profiler } : {}) });
    const D = model.cfg.hidden_size;
    // rows read back: a prefill chunk plus the rows a round recomputes (<= 2K), with room to spare
    // and the rows plain steps leave to catch up (CATCH_UP_GAP)
    this.R = this.session.chunk + 4 * K + 4 + CATCH_UP_GAP;
    this.rings = Array.from({ length: K + 1 }, () => new Float32Array(this.R * D));
    this.final = new Int32Array(K);
    this.rowIds = new Int32Array(this.session.chunk);
    this.verifyIds = new Int32Array(K + 1);
    this.qs = Array.from({ length: K }, () => new Float64Array(model.cfg.vocab_size));
    this.p = new Float64Array(model.cfg.vocab_size);
    this.cachedTokens = new Int32Array(opts.maxLen);
  }

  /** Forgets the cached tokens (the next `reuse` generation computes its whole prompt). */
  clear(): void {
    this.cachedLen = 0;
    this.session.reset();
    this.final.fill(0);
  }

  /** Copies `rows` hidden rows (ws.hidden for depth 0, else ws.h) of positions from.. into ring `depth`. */
  private keep(depth: number, src: Float32Array, from: number, rows: number): void {
    const D = this.session.engine.D;
    const ring = this.rings[depth]!;
    for (let r = 0; r < rows; r++) ring.set(src.subarray(r * D, (r + 1) * D), ((from + r) % this.R) * D);
  }

  /**
   * Module k on its rows from .. to-1 (to > from), t_{i+k} = tok(i + k); returns the logits of
   * row to-1 (a view; with `head` false none are computed, an empty array is returned). Reads
   * h^{k-1} from ring k-1, keeps h^k in ring k.
   */
  private runModule(k: number, from: number, to: number, tok: (m: number) => number, head = true): Float32Array {
    const e = this.session.engine;
    const D = e.D;
    const prev = this.rings[k - 1]!;
    let logits: Float32Array | null = null;
    for (let a = from; a < to; a += this.rowIds.length) {
      const T = Math.min(this.rowIds.length, to - a);
      for (let r = 0; r < T; r++) {
        const i = a + r;
        e.ws.hPrev.set(prev.subarray((i % this.R) * D, (i % this.R + 1) * D), r * D);
        this.rowIds[r] = tok(i + k);
      }
      e.forwardMtp(this.rowIds.subarray(0, T), { B: 1, T, start: a }, this.session.cache, k);
      this.keep(k, e.ws.h, a, T);
      if (a + T === to && head) logits = e.draftHead(T - 1, 1);
    }
    return logits ?? new Float32Array(0);
  }

  /**
   * Makes every module's rows final up to row `upto` - 1 where their inputs allow: module k's row
   * i needs h^{k-1}_i final and t_{i+k} known (i + k <= known). Modules run in order, one batched
   * forward each (chunked), without the draft head.
   */
  private catchUp(upto: number, known: number, tok: (m: number) => number): void {
    let end = upto;
    for (let k = 1; k <= this.depth; k++) {
      end = Math.min(end, known - k + 1);
      if (end > this.final[k - 1]!) this.runModule(k, this.final[k - 1]!, end, tok, false);
      this.final[k - 1] = Math.max(this.final[k - 1]!, end);
    }
  }

  /** The draft token from module logits: their argmax, or a draw from the sampler's q (kept in `q`). */
  private propose(logits: Float32Array, sampler: Sampler | undefined, q: Float64Array): number {
    if (!sampler) return argmax(logits, 0, logits.length);
    return draw(sampler.dist(logits, 0, 0, q), sampler.uniform());
  }

  /** Generation of n tokens after prompt (batch 1), drafting with the MTP chain: greedy, or
   * exact speculative sampling with `o.sampler`. */
  generate(prompt: Int32Array, n: number, o: SpeculativeOptions = {}): SpeculativeResult {
    const s = this.session;
    const e = s.engine;
    const P = prompt.length;
    const V = e.V;
    const K = this.depth;
    const sampler = o.sampler;
    if (P < 1 || !Number.isInteger(n) || n < 1) throw new DsvError('speculative: needs a prompt and n >= 1');
    // the last verification writes at most position P + n - 1
    if (P + n > s.cache.maxLen) throw new DsvError(`speculative: prompt ${P} + ${n} tokens exceed the cache length ${s.cache.maxLen}`);
    const ids = new Int32Array(P + n);
    ids.set(prompt);
    const drafts = new Int32Array(K);
    /** Token m: known (m <= known) from ids, else the draft d_{m-known}. */
    let known = P - 1;
    const tok = (m: number): number => (m <= known ? ids[m]! : drafts[m - known - 1]!);
    // reuse: rows before f are valid in the main cache (tokens 0 .. f-1 shared) and in every
    // module's (row i < f reads tokens up to i + K < the common prefix, and was final)
    // A policy that retired speculation (speculation-policy.ts) never drafts again: the modules
    // are left behind (no catch-up), the main cache is reused on its own
    const lapsed = (): boolean => o.policy?.retired?.() === true;
    const retired = lapsed();
    let f = 0;
    if (o.reuse) {
      const lim = Math.min(this.cachedLen, P - 1);
      let c = 0;
      while (c < lim && this.cachedTokens[c] === prompt[c]) c++;
      f = retired ? c : Math.max(0, c - K);
      if (!retired) for (let k = 0; k < K; k++) f = Math.min(f, this.final[k]!);
    }
    s.truncate(Math.min(f, s.cache.length));
    // module k's rows before final[k] stay valid (a retired policy's modules keep their own)
    for (let k = 0; k < K; k++) this.final[k] = retired ? Math.min(this.final[k]!, f) : f;
    this.cachedTokens.set(prompt);
    this.cachedLen = P;
    const t0 = performance.now();
    // ---- prefill: each main chunk, then the modules on their rows whose inputs are final ------
    let next = 0;
    for (let c0 = f; c0 < P; c0 += s.chunk) {
      const c = Math.min(s.chunk, P - c0);
      e.forwardMain(prompt.subarray(c0, c0 + c), { B: 1, T: c, start: c0 }, s.cache);
      s.cache.length = c0 + c;
      this.keep(0, e.ws.hidden, c0, c);
      if (c0 + c === P) {
        next = sampler ? sampler.pick(e.head(c - 1, 1), 0, V, 0) : argmax(e.head(c - 1, 1), 0, V);
        ids[P] = next;
        known = P;
      }
      // module k's row i is final when h^{k-1}_i is and t_{i+k} is known; row P-1 is left to
      // the first draft round (its logits propose d_k)
      if (!retired) this.catchUp(Math.min(c0 + c, P - 1), known, tok);
    }
    const draftedByDepth = new Array<number>(K).fill(0);
    const acceptedByDepth = new Array<number>(K).fill(0);
    let produced = 0;
    let finish: FinishReason = 'length';
    /** Keeps token t; true when the generation ends with it (EOS, which is not kept, or stop). */
    const emit = (t: number): boolean => {
      if (t === o.eos) {
        finish = 'eos';
        return true;
      }
      ids[P + produced++] = t;
      if (o.onToken?.(0, t) === true) {
        finish = 'stop';
        return true;
      }
      return false;
    };
    const t1 = performance.now();
    let ended = emit(next);
    let mainForwards = 0;
    let verifyMs = 0;
    let draftMs = 0;
    const policy = o.policy;
    policy?.setDepth?.(K);
    let plainSteps = 0;
    let lagging = false; // plain steps ran since the modules' rows were last made final
    let clock = policy?.now() ?? 0;
    while (!ended && produced < n) {
      const pos = s.cache.length; // = known: t_pos = next is known, not cached
      // one clock read per round: a round starts when the previous one was recorded
      // (process.cpuUsage is a system call, ~1.5-3 us here)
      const c0 = clock;
      if (policy?.next() === 'plain') {
        // ---- plain step: the main model on t_pos alone; the modules fall behind (bounded) ------
        if (pos - this.final[K - 1]! >= CATCH_UP_GAP && !lapsed()) {
          this.catchUp(pos - 1, known, tok);
          clock = policy.now();
          policy.record('speculate', clock - c0, 0); // upkeep: only speculation needs the modules' rows
        }
        const c1 = clock;
        const u = produced;
        this.verifyIds[0] = next;
        e.forwardMain(this.verifyIds.subarray(0, 1), { B: 1, T: 1, start: pos }, s.cache);
        mainForwards++;
        plainSteps++;
        const logits = e.head(0, 1);
        const t = sampler ? sampler.pick(logits, 0, V, 0) : argmax(logits, 0, V);
        this.keep(0, e.ws.hidden, pos, 1);
        s.cache.length = pos + 1;
        this.cachedTokens[pos] = next;
        this.cachedLen = pos + 1;
        ended = emit(t);
        next = t;
        known = pos + 1;
        lagging = true;
        s.engine.profiler?.endStep();
        // a retired policy measures nothing: no clock read (a system call) per step
        if (!lapsed()) clock = policy.now();
        policy.record('plain', clock - c1, produced - u);
        continue;
      }
      if (policy && lagging) {
        // the rows plain steps skipped, in one batched forward per module: work only speculation
        // needs (a plain decoder never runs it), charged to it (speculation-policy.ts)
        this.catchUp(pos - 1, known, tok);
        lagging = false;
        clock = policy.now();
        policy.record('speculate', clock - c0, 0);
      }
      const c1 = clock;
      const u = produced;
      // ---- draft: modules 1 .. k chained at row pos-1 (k <= the tokens still wanted) ----------
      const td = performance.now();
      const k = Math.min(K, n - produced);
      for (let j = 1; j <= k; j++) {
        const L = this.final[j - 1]!;
        drafts[j - 1] = this.propose(this.runModule(j, L, pos, tok), sampler, this.qs[j - 1]!);
        this.final[j - 1] = Math.max(L, pos - j + 1);
      }
      const tv = performance.now();
      draftMs += tv - td;
      // ---- verify [t_pos, d_1 .. d_k] in one main forward --------------------------------------
      this.verifyIds[0] = next;
      this.verifyIds.set(drafts.subarray(0, k), 1);
      e.forwardMain(this.verifyIds.subarray(0, k + 1), { B: 1, T: k + 1, start: pos }, s.cache);
      mainForwards++;
      const logits = e.head(0, k + 1);
      let a = 0; // drafts accepted
      let t = 0; // the main model's token after them
      for (; a < k; a++) {
        draftedByDepth[a]!++;
        const d = drafts[a]!;
        t = sampler ? this.verify(logits, a, d, this.qs[a]!, sampler) : argmax(logits, a * V, V);
        if (t !== d) break;
        acceptedByDepth[a]!++;
      }
      if (a === k) t = sampler ? sampler.pick(logits, k * V, V, 0) : argmax(logits, k * V, V);
      this.keep(0, e.ws.hidden, pos, a + 1);
      s.cache.length = pos + a + 1;
      this.cachedTokens.set(this.verifyIds.subarray(0, a + 1), pos);
      this.cachedLen = pos + a + 1;
      // module j's rows that read only accepted drafts (i + j - pos <= a) are final as computed
      for (let j = 1; j <= k; j++) this.final[j - 1] = Math.max(this.final[j - 1]!, Math.min(pos, pos - j + 1 + a));
      // tokens d_1 .. d_a and t; t_{pos+a+1} = t is the next (uncached) token
      for (let j = 0; j < a && !ended; j++) ended = emit(drafts[j]!) || produced >= n;
      if (!ended) ended = emit(t);
      next = t; // emit wrote d_1 .. d_a, t to ids[pos+1 .. pos+a+1] (read only while not ended)
      known = pos + a + 1;
      s.engine.profiler?.endStep();
      verifyMs += performance.now() - tv;
      if (policy) {
        clock = policy.now();
        policy.record('speculate', clock - c1, produced - u);
      }
    }
    // a chat's next turn reuses the modules' rows (`reuse`): bring them up to the main cache
    if (lagging && o.reuse && !lapsed()) this.catchUp(s.cache.length - 1, s.cache.length - 1, tok);
    const drafted = draftedByDepth.reduce((x, y) => x + y, 0);
    const accepted = acceptedByDepth.reduce((x, y) => x + y, 0);
    return {
      ids: ids.subarray(0, P + produced),
      finish,
      drafted,
      accepted,
      draftedByDepth,
      acceptedByDepth,
      reused: f,
      mainForwards,
      plainSteps,
      prefillMs: t1 - t0,
      decodeMs: performance.now() - t1,
      verifyMs,
      draftMs,
    };
  }

  /**
   * Speculative sampling's verification of the draft d ~ q at logits row `row`: d is kept with
   * probability min(1, p(d) / q(d)); else the token is drawn from max(0, p − q) renormalised.
   * The kept token is p-distributed either way (Leviathan et al. 2023, Thm. 1); it is recorded
   * in the sampler's history.
   */
  private verify(logits: Float32Array, row: number, d: number, q: Float64Array, sampler: Sampler): number {
    const p = sampler.dist(logits, row * q.length, 0, this.p);
    let t = d;
    if (!(sampler.uniform() * q[d]! < p[d]!)) {
      let z = 0;
      for (let i = 0; i < p.length; i++) {
        p[i] = Math.max(0, p[i]! - q[i]!);
        z += p[i]!;
      }
      if (z > 0) for (let i = 0; i < p.length; i++) p[i] = p[i]! / z;
      else sampler.dist(logits, row * q.length, 0, p); // p = q up to rounding: draw from p
      t = draw(p, sampler.uniform());
    }
    sampler.record(0, t);
    return t;
  }
}
