/**
 * Timing protocol of `dsv3 bench decode --batch N` (kept apart from the CLI so tests can run it
 * on tiny models): N greedy sequences through one ContinuousBatcher (maxBatch N). Sequence b's
 * prompt has o.prompt + b tokens (different contents and lengths, so the rows of a step sit at
 * different positions), and it generates o.tokens + 1 tokens: its prompt's token plus one per
 * decode step, as in `measureDecode`. All N are admitted together; the first step prefills them,
 * every later step is one batched forward of N rows. Time counts those later steps only (as
 * measureDecode counts decode steps, not the prefill). One untimed warm-up run, then `reps`
 * timed ones; aggregate tokens/s is the median over reps of N * tokens / decode time.
 */
import { median, quantile } from '../data/stats.js';
import type { DeepseekV3 } from '../model/model.js';
import { ContinuousBatcher } from './continuous-batcher.js';
import { type DecodeOptions, promptIds } from './measure.js';
import { type Phase, PhaseProfiler, type ProfileClock } from './profile.js';
import { argmax } from './sampling.js';

export interface BatchDecodeStats {
  batch: number;
  /** All sequences together: N * tokens / decode seconds (median over reps). */
  tokens_per_s: number;
  /** One sequence's rate: tokens_per_s / N. */
  per_sequence_tokens_per_s: number;
  /** Wall ms of one batched step (N tokens), median and p90 over every timed step. */
  ms_per_step_median: number;
  ms_per_step_p90: number;
  /** The first step: every prompt prefilled (median over reps). */
  prefill_ms: number;
  cpu_ms_per_step: number;
  /** Generated ids of each sequence in the last timed run. */
  ids: Int32Array[];
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

function prompts(model: DeepseekV3, o: DecodeOptions, n: number): Int32Array[] {
  return Array.from({ length: n }, (_, b) => promptIds(o.prompt + b, model.cfg.vocab_size, (o.seed ?? 1) + 7919 * b));
}

/** One run: admit every sequence, then step until all have left. */
function run(b: ContinuousBatcher, ps: Int32Array[], tokens: number, stepMs: number[] | null): { prefillMs: number; decodeMs: number; cpuMs: number; ids: Int32Array[] } {
  const ids = ps.map(() => [] as number[]);
  ps.forEach((prompt, i) => b.admit({ prompt, maxNew: tokens + 1, pick: argmax, onToken: (t) => void ids[i]!.push(t), onDone: () => undefined }));
  let t0 = performance.now();
  b.step();
  const prefillMs = performance.now() - t0;
  let decodeMs = 0;
  const c0 = process.cpuUsage();
  while (b.active > 0) {
    t0 = performance.now();
    b.step();
    const ms = performance.now() - t0;
    decodeMs += ms;
    stepMs?.push(ms);
  }
  const c = process.cpuUsage(c0);
  return { prefillMs, decodeMs, cpuMs: (c.user + c.system) / 1000, ids: ids.map((x) => Int32Array.from(x.slice(0, tokens))) };
}

export function measureBatchDecode(model: DeepseekV3, o: DecodeOptions & { batch: number }): BatchDecodeStats {
  const N = o.batch;
  const ps = prompts(model, o, N);
  const b = new ContinuousBatcher(model, { maxBatch: N, maxContext: o.prompt + N + o.tokens + 1 });
  run(b, ps, o.tokens, null);
  const rates: number[] = [];
  const steps: number[] = [];
  const prefills: number[] = [];
  const cpu: number[] = [];
  let ids: Int32Array[] = [];
  for (let r = 0; r < o.reps; r++) {
    const g = run(b, ps, o.tokens, steps);
    rates.push((N * o.tokens) / (g.decodeMs / 1000));
    prefills.push(g.prefillMs);
    cpu.push(g.cpuMs / o.tokens);
    ids = g.ids;
  }
  const agg = median(rates);
  return {
    batch: N,
    tokens_per_s: Math.round(agg * 10) / 10,
    per_sequence_tokens_per_s: Math.round((agg / N) * 10) / 10,
    ms_per_step_median: r3(median(steps)),
    ms_per_step_p90: r3(quantile(steps, 0.9)),
    prefill_ms: r3(median(prefills)),
    cpu_ms_per_step: r3(median(cpu)),
    ids,
  };
}

/** Per-phase ms per batched decode step (one profiled run after a warm-up; the prefill step excluded). */
export function profileBatchDecode(model: DeepseekV3, o: DecodeOptions & { batch: number }, clock: ProfileClock = 'wall'): Record<Phase | 'total', number> {
  const prof = new PhaseProfiler(clock);
  const ps = prompts(model, o, o.batch);
  const b = new ContinuousBatcher(model, { maxBatch: o.batch, maxContext: o.prompt + o.batch + o.tokens + 1, profiler: prof });
  run(b, ps, o.tokens, null);
  ps.forEach((prompt) => b.admit({ prompt, maxNew: o.tokens + 1, pick: argmax, onToken: () => undefined, onDone: () => undefined }));
  b.step(); // the prefills
  prof.reset();
  while (b.active > 0) b.step();
  return prof.perStep();
}
