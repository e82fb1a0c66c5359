/**
 * Timing protocols of `dsv3 bench decode` and `dsv3 bench prefill` (batch 1, greedy), kept
 * apart from the CLI so tests can run them on tiny models:
 *   - decode: prefill the prompt, then `tokens` decode steps each fed the previous argmax;
 *     one untimed warm-up generation, then `reps` timed ones; tokens/s is the median over reps
 *     of steps / decode time, plus the median and p90 step time over every timed step;
 *   - profile: one more generation with a PhaseProfiler attached (per-phase ms per step);
 *   - speculative: the same generation by MTP self-speculative decoding, with its acceptance
 *     rate and whether its ids equal plain greedy decoding;
 *   - baseline: the same steps through the model's own `decodeStep` (Tensor ops, absorbed path);
 *   - prefill: prompt tokens/s of `DecodeSession.prefill` (chunked).
 */
import type { DeepseekV3 } from '../model/model.js';
import { DecodeSession } from './decode-session.js';
import { type Decoder, generate, ModelDecoder } from './generate.js';
import { type Phase, PhaseProfiler, type ProfileClock } from './profile.js';
import { SpeculativeDecoder } from './speculative.js';
import { median, quantile } from '../data/stats.js';

export interface DecodeOptions {
  prompt: number;
  tokens: number;
  reps: number;
  seed?: number;
}

/** Deterministic prompt ids in [0, vocab). */
export function promptIds(n: number, vocab: number, seed = 1): Int32Array {
  const out = new Int32Array(n);
  let s = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s % vocab;
  }
  return out;
}


const r3 = (x: number): number => Math.round(x * 1000) / 1000;

export interface DecodeStats {
  tokens_per_s: number;
  ms_per_token_median: number;
  ms_per_token_p90: number;
  prefill_ms: number;
  /**
   * Process CPU time per decode step (all threads), a figure less sensitive than wall time to
   * other processes taking the cores; with one thread it is the step's own compute + stalls.
   */
  cpu_ms_per_token: number;
  /** Generated ids of the last timed run (prompt excluded). */
  ids: Int32Array;
}

/**
 * A Decoder that times what it delegates: the prefill, each decode step (wall ms) and the CPU
 * time of the steps. The timed protocols run the one generation loop (generate.ts) through it.
 */
class TimedDecoder implements Decoder {
  readonly batch: number;
  readonly V: number;
  prefillMs = 0;
  readonly stepMs: number[] = [];
  cpuMs = 0;

  constructor(
    private readonly inner: Decoder,
    /** Runs after each prefill, before the first step (e.g. to reset a profiler). */
    private readonly afterPrefill?: () => void,
  ) {
    this.batch = inner.batch;
    this.V = inner.V;
  }
  reset(): void {
    this.inner.reset();
    this.prefillMs = this.cpuMs = 0;
    this.stepMs.length = 0;
  }
  prefill(ids: Int32Array, T: number): Float32Array {
    const t0 = performance.now();
    const l = this.inner.prefill(ids, T);
    this.prefillMs += performance.now() - t0;
    this.afterPrefill?.();
    return l;
  }
  step(tokens: Int32Array): Float32Array {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const l = this.inner.step(tokens);
    this.stepMs.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    this.cpuMs += (c.user + c.system) / 1000;
    return l;
  }
}

/** One greedy generation of `tokens` decode steps (the prefill's token plus one per step). */
function timedGenerate(d: TimedDecoder, prompt: Int32Array, tokens: number): { decodeMs: number; ids: Int32Array } {
  const g = generate(d, prompt, prompt.length, { maxNew: tokens + 1 });
  const decodeMs = d.stepMs.reduce((a, b) => a + b, 0);
  return { decodeMs, ids: Int32Array.from(g.tokens[0]!.slice(0, tokens)) };
}

export function measureDecode(model: DeepseekV3, o: DecodeOptions): DecodeStats {
  const prompt = promptIds(o.prompt, model.cfg.vocab_size, o.seed);
  const d = new TimedDecoder(new DecodeSession(model, { maxLen: o.prompt + o.tokens }));
  timedGenerate(d, prompt, o.tokens);
  const steps: number[] = [];
  const rates: number[] = [];
  const prefills: number[] = [];
  const cpu: number[] = [];
  let ids: Int32Array = new Int32Array(0);
  for (let r = 0; r < o.reps; r++) {
    const g = timedGenerate(d, prompt, o.tokens);
    rates.push(o.tokens / (g.decodeMs / 1000));
    steps.push(...d.stepMs);
    prefills.push(d.prefillMs);
    cpu.push(d.cpuMs / o.tokens);
    ids = g.ids;
  }
  return {
    tokens_per_s: Math.round(median(rates) * 10) / 10,
    ms_per_token_median: r3(median(steps)),
    ms_per_token_p90: r3(quantile(steps, 0.9)),
    prefill_ms: r3(median(prefills)),
    cpu_ms_per_token: r3(median(cpu)),
    ids,
  };
}

/** Per-phase ms per decode step (one profiled generation after a warm-up). */
export function profileDecode(model: DeepseekV3, o: DecodeOptions, clock: ProfileClock = 'wall'): Record<Phase | 'total', number> {
  const prof = new PhaseProfiler(clock);
  const prompt = promptIds(o.prompt, model.cfg.vocab_size, o.seed);
  const s = new DecodeSession(model, { maxLen: o.prompt + o.tokens, profiler: prof });
  timedGenerate(new TimedDecoder(s), prompt, o.tokens);
  prof.reset();
  // the profile counts decode steps only: it restarts after each prefill
  const d = new TimedDecoder(s, () => prof.reset());
  for (let r = 0; r < Math.max(1, o.reps); r++) timedGenerate(d, prompt, o.tokens);
  return prof.perStep();
}

export interface SpeculativeStats {
  tokens_per_s: number;
  acceptance_rate: number;
  tokens_per_main_forward: number;
  drafted: number;
  accepted: number;
  matches_greedy: boolean;
  /** Mean ms of one two-row verification forward (main model + head) and of one MTP draft step. */
  ms_per_verify: number;
  ms_per_draft: number;
  /**
   * (1 + a) / (verify + draft) tokens/s at the paper's second-token acceptance a = 0.85
   * (section 5.4.3), from the measured step costs: what a trained MTP module would give here.
   */
  projected_tokens_per_s_at_085: number;
}

/** MTP self-speculative greedy decoding of `tokens` tokens (time excludes the prefill). */
export function measureSpeculative(model: DeepseekV3, o: DecodeOptions, greedyIds: Int32Array | null): SpeculativeStats {
  const prompt = promptIds(o.prompt, model.cfg.vocab_size, o.seed);
  const n = o.tokens + 1; // the prefill's token plus one per decode step, as in measureDecode
  const spec = new SpeculativeDecoder(model, { maxLen: o.prompt + n });
  spec.generate(prompt, n);
  const rates: number[] = [];
  let last = spec.generate(prompt, n);
  for (let r = 0; r < o.reps; r++) {
    last = spec.generate(prompt, n);
    rates.push(o.tokens / (last.decodeMs / 1000));
  }
  const verify = last.verifyMs / Math.max(1, last.mainForwards);
  const draft = last.draftMs / Math.max(1, last.mainForwards);
  let matches = true;
  if (greedyIds) for (let i = 0; i < greedyIds.length; i++) if (last.ids[o.prompt + i] !== greedyIds[i]) matches = false;
  return {
    tokens_per_s: Math.round(median(rates) * 10) / 10,
    acceptance_rate: r3(last.accepted / Math.max(1, last.drafted)),
    tokens_per_main_forward: r3((n - 1) / Math.max(1, last.mainForwards)),
    drafted: last.drafted,
    accepted: last.accepted,
    matches_greedy: matches,
    ms_per_verify: r3(verify),
    ms_per_draft: r3(draft),
    projected_tokens_per_s_at_085: Math.round((1.85 / (verify + draft)) * 1000 * 10) / 10,
  };
}

/** The same greedy steps through the model's own Tensor path (`decodeStep`, absorbed MLA). */
export function measureModelDecode(model: DeepseekV3, o: DecodeOptions): { tokens_per_s: number; ms_per_token_median: number; cpu_ms_per_token: number } {
  const prompt = promptIds(o.prompt, model.cfg.vocab_size, o.seed);
  const d = new TimedDecoder(new ModelDecoder(model, 1, o.prompt + o.tokens, 'absorbed'));
  timedGenerate(d, prompt, o.tokens);
  const steps: number[] = [];
  const rates: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < o.reps; r++) {
    rates.push(o.tokens / (timedGenerate(d, prompt, o.tokens).decodeMs / 1000));
    steps.push(...d.stepMs);
    cpu.push(d.cpuMs / o.tokens);
  }
  return { tokens_per_s: Math.round(median(rates) * 10) / 10, ms_per_token_median: r3(median(steps)), cpu_ms_per_token: r3(median(cpu)) };
}

/** Prompt tokens/s of a chunked prefill (batch 1). */
export function measurePrefill(model: DeepseekV3, o: { prompt: number; chunk: number; reps: number; seed?: number }): { tokens_per_s: number; ms_median: number } {
  const prompt = promptIds(o.prompt, model.cfg.vocab_size, o.seed);
  const s = new DecodeSession(model, { maxLen: o.prompt, chunk: o.chunk });
  const once = (): number => {
    s.reset();
    const t0 = performance.now();
    s.prefill(prompt, o.prompt);
    return performance.now() - t0;
  };
  once();
  const ms: number[] = [];
  for (let r = 0; r < o.reps; r++) ms.push(once());
  const m = median(ms);
  return { tokens_per_s: Math.round(o.prompt / (m / 1000)), ms_median: r3(m) };
}
