/**
 * When to speculate: the SpeculativeDecoder (speculative.ts) asks a SpeculationPolicy before every
 * round whether to run a speculative round (MTP drafts, then one (K+1)-row verification forward)
 * or a plain step (one main forward, one token). Either kind of round emits exactly the main
 * model's tokens (greedy: its argmax; sampling: draws from its distribution), so a policy
 * changes only the speed, never the output.
 *
 * Speculation pays when the verification forward over K+1 rows costs less than the tokens it
 * yields (paper section 5.4.3: memory-bound decoding, where extra rows are nearly free). On small,
 * compute-bound models (`dsv3 train`'s default: a 2-row verification costs ~1.65 one-row steps,
 * BENCHMARKS.md "M-row steps, second pass") it does not. AdaptiveSpeculation measures instead of
 * guessing: the cost per emitted token of each kind of round, on a clock (default: the process's
 * CPU time, which other processes' time slices do not inflate), and runs the cheaper one:
 *   1. probe: `probeRounds` speculative rounds and `probeRounds` plain steps, alternating (so
 *      both see the same load and context length; each mode's very first round is a warm-up,
 *      not measured);
 *   2. run the cheaper mode (speculative only when its cost per token is below plain's by
 *      `margin`) for `interval` tokens;
 *   3. probe again and decide again: the same decision doubles `interval` (up to
 *      `maxInterval`), a change resets it to `firstInterval`.
 * The MTP modules' catch-up after plain steps (batched, a fraction of a step per row) is not
 * charged to either mode.
 * The state carries over between generations (a chat's turns, one policy per model).
 */
import { DsvError } from '../errors.js';

export type RoundMode = 'speculate' | 'plain';

/** What the decoder asks before each round and tells after it. */
export interface SpeculationPolicy {
  /** The kind of the next round. */
  next(): RoundMode;
  /** The clock the costs are measured on (ms, monotone). */
  now(): number;
  /** A round of `mode` that took `ms` on the clock and emitted `tokens` tokens (0: work done for
   * that mode without a token, e.g. the MTP modules catching up after plain steps). */
  record(mode: RoundMode, ms: number, tokens: number): void;
}

/** The process's CPU time in ms (all its threads; process.cpuUsage). */
export function cpuClockMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

export interface AdaptiveOptions {
  /** Rounds of each mode per probe (default 8). */
  probeRounds?: number;
  /** Tokens run in the chosen mode before the first re-probe (default 64). */
  firstInterval?: number;
  /** Most tokens between re-probes (default 512). */
  maxInterval?: number;
  /** Speculate only when its cost per token is below (1 - margin) x plain's (default 0.03). */
  margin?: number;
  /** 'cpu' (default): process CPU time; 'wall': performance.now(); or any ms clock. */
  clock?: 'cpu' | 'wall' | (() => number);
}

/** The decision so far, for --json / --verbose. */
export interface AdaptiveSummary {
  /** The mode in force (the last decision). */
  decision: RoundMode;
  /** Probes run (the first included) and decisions that changed the mode. */
  probes: number;
  switches: number;
  /** Tokens emitted by speculative rounds and by plain steps. */
  speculativeTokens: number;
  plainTokens: number;
  /** The latest measured cost per token of each mode (ms on the clock; NaN before measured). */
  speculativeMsPerToken: number;
  plainMsPerToken: number;
}

interface Tally {
  ms: number;
  tokens: number;
}

export class AdaptiveSpeculation implements SpeculationPolicy {
  readonly now: () => number;
  private readonly probeRounds: number;
  private readonly firstInterval: number;
  private readonly maxInterval: number;
  private readonly margin: number;
  /** Probing (rounds of each mode left to measure), else running `mode` (`runLeft` tokens). */
  private probing = true;
  private readonly probeLeft: Record<RoundMode, number>;
  private lastProbed: RoundMode = 'plain';
  private mode: RoundMode = 'speculate';
  private runLeft = 0;
  private interval: number;
  /** Each mode's cost in the current probe. */
  private readonly window: Record<RoundMode, Tally> = { speculate: { ms: 0, tokens: 0 }, plain: { ms: 0, tokens: 0 } };
  /** The latest probe's cost per token of each mode. */
  private readonly cost: Record<RoundMode, number> = { speculate: NaN, plain: NaN };
  private readonly emitted: Record<RoundMode, number> = { speculate: 0, plain: 0 };
  private probes = 1;
  private switches = 0;
  private decided = false;
  /** Whether a mode's first round (its warm-up: JIT, caches) has been seen; it is not measured. */
  private readonly warm: Record<RoundMode, boolean> = { speculate: false, plain: false };

  constructor(o: AdaptiveOptions = {}) {
    this.probeRounds = o.probeRounds ?? 8;
    this.firstInterval = o.firstInterval ?? 64;
    this.maxInterval = o.maxInterval ?? 512;
    this.margin = o.margin ?? 0.03;
    for (const [k, x] of [['probeRounds', this.probeRounds], ['firstInterval', this.firstInterval], ['maxInterval', this.maxInterval]] as const) {
      if (!(Number.isInteger(x) && x >= 1)) throw new DsvError(`AdaptiveSpeculation: ${k} must be a positive integer, got ${x}`);
    }
    if (this.maxInterval < this.firstInterval) throw new DsvError(`AdaptiveSpeculation: maxInterval ${this.maxInterval} < firstInterval ${this.firstInterval}`);
    if (!(this.margin >= 0 && this.margin < 1)) throw new DsvError(`AdaptiveSpeculation: margin must be in [0, 1), got ${this.margin}`);
    const c = o.clock ?? 'cpu';
    this.now = c === 'cpu' ? cpuClockMs : c === 'wall' ? () => performance.now() : c;
    this.probeLeft = { speculate: this.probeRounds, plain: this.probeRounds };
    this.interval = this.firstInterval;
  }

  next(): RoundMode {
    if (!this.probing) return this.mode;
    // alternate while both modes have rounds left, so that both see the same load and context
    const { speculate, plain } = this.probeLeft;
    if (speculate > 0 && plain > 0) return this.lastProbed === 'plain' ? 'speculate' : 'plain';
    return speculate > 0 ? 'speculate' : 'plain';
  }

  record(mode: RoundMode, ms: number, tokens: number): void {
    this.emitted[mode] += tokens;
    if (tokens === 0) return; // work without a token (the modules' catch-up) is no round
    if (!this.warm[mode]) {
      this.warm[mode] = true;
      return;
    }
    if (this.probing) {
      this.lastProbed = mode;
      const w = this.window[mode];
      w.ms += Math.max(0, ms);
      w.tokens += tokens;
      this.probeLeft[mode]--;
      if (this.probeLeft.speculate <= 0 && this.probeLeft.plain <= 0) this.decide();
    } else if (mode === this.mode) {
      this.runLeft -= tokens;
      if (this.runLeft <= 0) this.startProbe();
    }
  }

  /** The end of a probe: run the cheaper mode for `interval` tokens. */
  private decide(): void {
    this.probing = false;
    for (const m of ['speculate', 'plain'] as const) {
      const w = this.window[m];
      this.cost[m] = w.ms / w.tokens;
      w.ms = 0;
      w.tokens = 0;
    }
    const best: RoundMode = this.cost.speculate < this.cost.plain * (1 - this.margin) ? 'speculate' : 'plain';
    if (this.decided && best !== this.mode) this.switches++;
    if (this.decided && best === this.mode) this.interval = Math.min(this.maxInterval, this.interval * 2);
    else if (this.decided) this.interval = this.firstInterval;
    this.decided = true;
    this.mode = best;
    this.runLeft = this.interval;
  }

  private startProbe(): void {
    this.probes++;
    this.probing = true;
    this.probeLeft.speculate = this.probeRounds;
    this.probeLeft.plain = this.probeRounds;
  }

  summary(): AdaptiveSummary {
    return {
      decision: this.decided ? this.mode : 'speculate',
      probes: this.probes,
      switches: this.switches,
      speculativeTokens: this.emitted.speculate,
      plainTokens: this.emitted.plain,
      speculativeMsPerToken: this.cost.speculate,
      plainMsPerToken: this.cost.plain,
    };
  }
}
