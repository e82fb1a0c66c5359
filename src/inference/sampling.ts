/**
 * Choosing the next token from a logits row: the penalties, the temperature, the top-k / top-p /
 * min-p filters and the seeded draw of the generation loop (generate.ts). Order, as in Hugging
 * Face `generate` and vLLM:
 *   1. penalties on the raw logits of each sequence:
 *      repetition (CTRL, Keskar et al. 2019; HF): every token seen so far, prompt included, has
 *        its logit divided by the penalty when positive and multiplied by it when negative;
 *      frequency / presence (OpenAI): logit −= count · frequency + (count > 0) · presence, with
 *        count the occurrences among the generated tokens;
 *   2. temperature 0: argmax (greedy); else p ∝ exp(logit / T), then
 *   3. top-k keeps the K most probable tokens, top-p the smallest most-probable set whose mass
 *      (renormalised after top-k) reaches P, min-p the tokens with p ≥ min_p · p_max;
 *   4. one draw from the renormalised rest with the sampler's seeded Rng.
 */
import { Rng } from '../data/rng.js';
import { DsvError } from '../errors.js';

export interface SamplingOptions {
  /** Softmax temperature; 0 is greedy (argmax). */
  temperature: number;
  /** Keep the K most likely tokens (0: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens with probability mass ≥ P (1: all). */
  topP?: number;
  /** Keep tokens whose probability is ≥ minP times the largest one (0: all). */
  minP?: number;
  /** CTRL / Hugging Face repetition penalty, ≥ 1 to discourage (1: none). */
  repetitionPenalty?: number;
  /** OpenAI frequency penalty: subtracted once per earlier occurrence (0: none). */
  frequencyPenalty?: number;
  /** OpenAI presence penalty: subtracted once from every token generated before (0: none). */
  presencePenalty?: number;
}

/** Index of the largest of v[off .. off+n) (first on ties): greedy decoding. */
export function argmax(v: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (v[off + i]! > v[off + best]!) best = i;
  return best;
}

/** Whether the options change the logits before the choice (then the output is not plain greedy). */
export function hasPenalties(o: SamplingOptions): boolean {
  return (o.repetitionPenalty ?? 1) !== 1 || (o.frequencyPenalty ?? 0) !== 0 || (o.presencePenalty ?? 0) !== 0;
}

function check(o: SamplingOptions): void {
  const bad = (what: string, v: number | undefined, ok: (v: number) => boolean): void => {
    if (v !== undefined && !(Number.isFinite(v) && ok(v))) throw new DsvError(`sampling: ${what}, got ${v}`);
  };
  bad('temperature must be >= 0', o.temperature, (v) => v >= 0);
  bad('topK must be an integer >= 0', o.topK, (v) => Number.isInteger(v) && v >= 0);
  bad('topP must be in (0, 1]', o.topP, (v) => v > 0 && v <= 1);
  bad('minP must be in [0, 1]', o.minP, (v) => v >= 0 && v <= 1);
  bad('repetitionPenalty must be > 0', o.repetitionPenalty, (v) => v > 0);
  bad('frequencyPenalty must be finite', o.frequencyPenalty, () => true);
  bad('presencePenalty must be finite', o.presencePenalty, () => true);
}

/**
 * Applies the penalties to `row` in place: repetition over `seen` (prompt and generated tokens),
 * frequency / presence over `counts` (generated tokens → occurrences).
 */
export function applyPenalties(row: Float32Array, o: SamplingOptions, seen: Iterable<number>, counts: ReadonlyMap<number, number>): void {
  const rep = o.repetitionPenalty ?? 1;
  if (rep !== 1) {
    for (const t of seen) row[t] = row[t]! > 0 ? row[t]! / rep : row[t]! * rep;
  }
  const freq = o.frequencyPenalty ?? 0;
  const pres = o.presencePenalty ?? 0;
  if (freq !== 0 || pres !== 0) {
    for (const [t, c] of counts) row[t] = row[t]! - c * freq - (c > 0 ? pres : 0);
  }
}

/**
 * The sampling distribution of a (penalised) logits row at temperature > 0 after top-k, top-p
 * and min-p, written to `probs` (zero for filtered tokens, summing to 1).
 */
export function tokenProbs(row: Float32Array, o: SamplingOptions, probs: Float64Array): Float64Array {
  const V = row.length;
  const T = o.temperature;
  if (!(T > 0)) throw new DsvError('tokenProbs: temperature must be > 0 (0 is greedy)');
  let mx = -Infinity;
  for (let i = 0; i < V; i++) if (row[i]! > mx) mx = row[i]!;
  for (let i = 0; i < V; i++) probs[i] = Math.exp((row[i]! - mx) / T); // p_i / p_max
  const topK = o.topK ?? 0;
  const topP = o.topP ?? 1;
  if ((topK > 0 && topK < V) || topP < 1) {
    // keep the `keep` most probable tokens (lowest ids first on ties); a native sort of the values
    const sorted = Float64Array.from(probs).sort(); // ascending: the j-th most probable is sorted[V-1-j]
    let keep = topK > 0 ? Math.min(topK, V) : V;
    if (topP < 1) {
      let z = 0;
      for (let j = 0; j < keep; j++) z += sorted[V - 1 - j]!;
      let cum = 0;
      for (let j = 0; j < keep; j++) {
        cum += sorted[V - 1 - j]!;
        if (cum >= topP * z) {
          keep = j + 1;
          break;
        }
      }
    }
    const thr = sorted[V - keep]!;
    let ties = keep; // values equal to thr that may stay: keep minus those above it
    for (let i = 0; i < V; i++) if (probs[i]! > thr) ties--;
    for (let i = 0; i < V; i++) {
      if (probs[i]! > thr) continue;
      if (probs[i] === thr && ties > 0) ties--;
      else probs[i] = 0;
    }
  }
  const minP = o.minP ?? 0;
  let z = 0;
  for (let i = 0; i < V; i++) {
    if (probs[i]! < minP) probs[i] = 0; // p_max's ratio is 1: never filtered
    z += probs[i]!;
  }
  for (let i = 0; i < V; i++) probs[i] = probs[i]! / z;
  return probs;
}

/** Draws an index from `probs` (summing to 1) with one uniform number u in [0, 1). */
export function draw(probs: Float64Array, u: number): number {
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i]! <= 0) continue;
    u -= probs[i]!;
    last = i;
    if (u < 0) return i;
  }
  return last;
}

/**
 * The token picker of the generation loop for B sequences: `pick(logits, off, V, seq)` chooses
 * sequence `seq`'s next token from logits[off .. off+V) and records it in that sequence's
 * history (for the penalties). `prompt(seq, ids)` adds the prompt to the repetition history.
 */
export class Sampler {
  private readonly rng: Rng;
  private readonly row: Float32Array;
  private readonly probs: Float64Array;
  private readonly seen: Array<Set<number>>;
  private readonly counts: Array<Map<number, number>>;
  private readonly penalised: boolean;

  constructor(readonly o: SamplingOptions, opts: { V: number; batch?: number; seed?: number }) {
    check(o);
    const B = opts.batch ?? 1;
    this.rng = new Rng(opts.seed ?? 0);
    this.row = new Float32Array(opts.V);
    this.probs = new Float64Array(opts.V);
    this.seen = Array.from({ length: B }, () => new Set());
    this.counts = Array.from({ length: B }, () => new Map());
    this.penalised = hasPenalties(o);
  }

  /** Adds prompt ids of sequence `seq` to its repetition-penalty history. */
  prompt(seq: number, ids: ArrayLike<number>): void {
    for (let i = 0; i < ids.length; i++) this.seen[seq]!.add(ids[i]!);
  }

  readonly pick = (logits: Float32Array, off: number, V: number, seq = 0): number => {
    const row = this.row;
    if (V !== row.length) throw new DsvError(`Sampler: logits rows of ${V}, expected ${row.length}`);
    let t: number;
    if (!this.penalised && this.o.temperature <= 0) t = argmax(logits, off, V);
    else {
      row.set(logits.subarray(off, off + V));
      if (this.penalised) applyPenalties(row, this.o, this.seen[seq]!, this.counts[seq]!);
      t = this.o.temperature <= 0 ? argmax(row, 0, V) : draw(tokenProbs(row, this.o, this.probs), this.rng.nextFloat());
    }
    this.record(seq, t);
    return t;
  };

  /**
   * The distribution `pick` draws sequence `seq`'s next token from, given its history so far,
   * written to `out` (one-hot at the argmax for temperature 0). Speculative sampling compares
   * the draft's and the main model's distributions (speculative.ts).
   */
  dist(logits: Float32Array, off: number, seq: number, out: Float64Array): Float64Array {
    const row = this.row;
    const V = row.length;
    row.set(logits.subarray(off, off + V));
    if (this.penalised) applyPenalties(row, this.o, this.seen[seq]!, this.counts[seq]!);
    if (this.o.temperature > 0) return tokenProbs(row, this.o, out);
    out.fill(0);
    out[argmax(row, 0, V)] = 1;
    return out;
  }

  /** A uniform number in [0, 1) from the sampler's seeded stream. */
  uniform(): number {
    return this.rng.nextFloat();
  }

  /** Adds a token chosen outside `pick` to sequence `seq`'s history. */
  record(seq: number, t: number): void {
    if (!this.penalised) return;
    this.seen[seq]!.add(t);
    this.counts[seq]!.set(t, (this.counts[seq]!.get(t) ?? 0) + 1);
  }
}
