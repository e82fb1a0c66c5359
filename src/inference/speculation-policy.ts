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
 *   1. probe: four blocks of `probeRounds` rounds, speculative and plain in turn (so both see
 *      the same load and context; the first round of a block pays for the switch and is not
 *      measured); a mode's cost per token is its median round's over its mean tokens per round
 *      (robust to a preempted or interrupted round);
 *   2. run the cheaper mode (speculative only when its cost per token is below plain's by
 *      `margin`) for `interval` tokens;
 *   3. probe again (one block of each mode, the one not running first) and decide again: the
 *      same decision doubles `interval` (up to `maxInterval`), a change resets it to
 *      `firstInterval`. A speculative run is also watched: when its last 8 rounds cost more per
 *      token than the last probe's plain steps (the text got harder to draft), it probes at once.
 * Accounting: every cost is charged to the mode that causes it, per emitted token.
 *   - The MTP modules' catch-up (the rows plain steps skipped, run in batched forwards before a
 *     speculative round, or every CATCH_UP_GAP plain tokens) exists only so that speculation can
 *     run: a plain decoder never pays it. The decoder reports it as work of 'speculate' with no
 *     token (record('speculate', ms, 0)). The catch-up a probe causes itself (the rows of its own
 *     plain block) is added to speculation's cost per token in that probe (spread over the
 *     probe's speculative tokens), so speculation is chosen only when it beats plain decoding
 *     including it. The catch-up after a plain run (its rows) is the upkeep of keeping
 *     speculation possible: reported (summary().catchUpMs), charged to no decision.
 *   - Upkeep costs every plain token (per module, a batched row: ~4% of a step on `dsv3
 *     train`'s default model), so a policy that keeps probing a speculation that loses is slower
 *     than plain decoding by it. After `retireAfter` probes in a row found speculation no cheaper
 *     than plain steps, while the upkeep per plain token exceeds `budget` x a plain step, the
 *     policy retires speculation for good (for its life: a chat's turns): the decoder runs plain
 *     steps without catch-up, as a plain decoder does.
 *   - Bound: a speculative round yields at most depth + 1 tokens (every draft accepted). When a
 *     probe finds its median round (with the catch-up the probe caused) costing at least
 *     (depth + 1) x (1 - margin) plain steps, speculation would lose at any acceptance, on any
 *     text: the policy retires it after that one probe. This is the small, compute-bound case
 *     (dsv3 train's default: a 2-row verification ~1.6 steps plus a draft ~0.3); a model whose
 *     rounds are cheap keeps probing, since a hard stretch of text (low acceptance) passes.
 *     The first probe checks the bound already after its first speculative and plain blocks
 *     (boundLoses): where it holds there, the probe ends after half its rounds, before any
 *     catch-up (short generations, a chat's first turn: the probe is most of their cost).
 *     The CLI keeps that verdict per checkpoint and machine (speculation-verdict.ts): a later
 *     run starts retired (`remembered`), i.e. plain, without the probe.
 *   - A probe of a mode that loses costs its extra time; after a plain decision the re-probe
 *     interval is stretched so that the next re-probe's expected loss (its speculative tokens x
 *     the cost difference, plus the catch-up it causes) stays under `budget` x the plain run's
 *     cost: with speculation far dearer, probes get rare (up to 4 x maxInterval tokens apart).
 * The state carries over between generations (a chat's turns, one policy per model).
 */
import { DsvError } from '../errors.js';

export type RoundMode = 'speculate' | 'plain';

/** What the decoder asks before each round and tells after it. */
export interface SpeculationPolicy {
  /** The kind of the next round. */
  next(): RoundMode;
  /** Told by the decoder before its rounds: drafts per speculative round. */
  setDepth?(depth: number): void;
  /** The clock the costs are measured on (ms, monotone). */
  now(): number;
  /** True once speculation is over for good: every next() is 'plain' and the decoder may let
   * the MTP modules fall behind (no catch-up; their rows are not kept). */
  retired?(): boolean;
  /** A round of `mode` that took `ms` on the clock and emitted `tokens` tokens (0: work done for
   * that mode without a token: the MTP modules catching up on the rows plain steps skipped,
   * reported as 'speculate', the mode that needs it). */
  record(mode: RoundMode, ms: number, tokens: number): void;
}

/** The process's CPU time in ms (all its threads; process.cpuUsage). */
export function cpuClockMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

export interface AdaptiveOptions {
  /** Rounds per block of a probe (4 blocks, 2 per mode; default 4, at least 2). */
  probeRounds?: number;
  /** Tokens run in the chosen mode before the first re-probe (default 64). */
  firstInterval?: number;
  /** Most tokens between re-probes (default 512). */
  maxInterval?: number;
  /** Speculate only when its cost per token is below (1 - margin) x plain's (default 0.1: a
   * speculative stretch also pays the probes and the modules' catch-up, not measured). */
  margin?: number;
  /** Most extra cost a re-probe may add to a plain run, as a fraction of the run's cost (default
   * 0.02): after a plain decision the next interval is at least (expected re-probe loss) /
   * (budget x plain cost per token) tokens, up to 4 x maxInterval. */
  budget?: number;
  /** Retire speculation after this many probes in a row found it no cheaper than plain steps
   * while its upkeep (catch-up per plain token) exceeds budget x a plain step (default 2; 0:
   * never). */
  retireAfter?: number;
  /** Retire speculation after one probe whose rounds would lose even with every draft accepted
   * (the bound in the header; default true). */
  retireBound?: boolean;
  /** Start retired (retiredBy 'remembered'): an earlier run on this checkpoint and machine found the
   * bound (speculation-verdict.ts); default false. */
  remembered?: boolean;
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
  /** Catch-up time (ms on the clock) of the MTP modules: in probes (charged to speculation) and
   * after plain runs (upkeep). */
  catchUpMs: number;
  /** The latest re-probe interval (tokens). */
  interval: number;
  /** Catch-up per plain token skipped by the modules (ms; NaN before any catch-up). */
  upkeepMsPerToken: number;
  /** Speculation retired for good (see AdaptiveOptions.retireAfter, retireBound). */
  retired: boolean;
  /** Why: 'losing' (retireAfter), 'bound' (retireBound) or 'remembered' (an earlier run's bound,
   * AdaptiveOptions.remembered); null while not retired. */
  retiredBy: 'losing' | 'bound' | 'remembered' | null;
  /** The latest probe's median speculative round (ms, with the catch-up it caused; NaN before). */
  speculativeMsPerRound: number;
}

interface Tally {
  ms: number;
  tokens: number;
}

/** Rounds of a speculative run watched against the plain cost (see record). */
const WATCH = 8;

/** The median of xs (not empty). */
function median(xs: number[]): number {
  const v = [...xs].sort((x, y) => x - y);
  const h = v.length >> 1;
  return v.length % 2 ? v[h]! : (v[h - 1]! + v[h]!) / 2;
}

export class AdaptiveSpeculation implements SpeculationPolicy {
  readonly now: () => number;
  private readonly block: number;
  private readonly firstInterval: number;
  private readonly maxInterval: number;
  private readonly margin: number;
  /** Probing: the next round of the probe's plan (the first probe 4 blocks: first, other, first,
   * other; a re-probe 2: the mode not running, then the running one), else running `mode` for
   * `runLeft` more tokens. */
  private probing = true;
  private step = 0;
  private first: RoundMode = 'speculate';
  private mode: RoundMode = 'speculate';
  private runLeft = 0;
  private interval: number;
  /** The current probe's measured rounds: cost (ms) and tokens, per mode. */
  private readonly ms: Record<RoundMode, number[]> = { speculate: [], plain: [] };
  private readonly toks: Record<RoundMode, number[]> = { speculate: [], plain: [] };
  /** The latest probe's cost per token of each mode. */
  private readonly cost: Record<RoundMode, number> = { speculate: NaN, plain: NaN };
  private readonly emitted: Record<RoundMode, number> = { speculate: 0, plain: 0 };
  private probes = 1;
  private switches = 0;
  private decided = false;
  private readonly budget: number;
  /** The current probe: catch-up it caused, and its speculative rounds' tokens and time (every
   * round, measured or not: the probe's real cost). */
  private probeCatchMs = 0;
  private probeSpecTokens = 0;
  private probeSpecMs = 0;
  private catchUpMs = 0;
  /** Plain tokens since the modules were last final (the rows a catch-up runs), and all rows
   * caught up. */
  private lagTokens = 0;
  private catchUpRows = 0;
  private readonly retireAfter: number;
  /** Probes in a row that found speculation no cheaper than plain. */
  private losing = 0;
  private over = false;
  private retiredBy: AdaptiveSummary['retiredBy'] = null;
  private readonly retireBound: boolean;
  private depth = 1;
  private probeSpecRounds = 0;
  private roundCost = NaN;

  constructor(o: AdaptiveOptions = {}) {
    this.block = o.probeRounds ?? 4;
    this.firstInterval = o.firstInterval ?? 64;
    this.maxInterval = o.maxInterval ?? 512;
    this.margin = o.margin ?? 0.1;
    this.budget = o.budget ?? 0.02;
    this.retireAfter = o.retireAfter ?? 2;
    this.retireBound = o.retireBound ?? true;
    if (!(Number.isInteger(this.retireAfter) && this.retireAfter >= 0)) throw new DsvError(`AdaptiveSpeculation: retireAfter must be an integer >= 0, got ${this.retireAfter}`);
    for (const [k, x] of [['probeRounds', this.block], ['firstInterval', this.firstInterval], ['maxInterval', this.maxInterval]] as const) {
      if (!(Number.isInteger(x) && x >= 1)) throw new DsvError(`AdaptiveSpeculation: ${k} must be a positive integer, got ${x}`);
    }
    if (this.block < 2) throw new DsvError(`AdaptiveSpeculation: probeRounds must be >= 2 (a block's first round is not measured), got ${this.block}`);
    if (this.maxInterval < this.firstInterval) throw new DsvError(`AdaptiveSpeculation: maxInterval ${this.maxInterval} < firstInterval ${this.firstInterval}`);
    if (!(this.margin >= 0 && this.margin < 1)) throw new DsvError(`AdaptiveSpeculation: margin must be in [0, 1), got ${this.margin}`);
    if (!(this.budget > 0 && this.budget <= 1)) throw new DsvError(`AdaptiveSpeculation: budget must be in (0, 1], got ${this.budget}`);
    const c = o.clock ?? 'cpu';
    this.now = c === 'cpu' ? cpuClockMs : c === 'wall' ? () => performance.now() : c;
    this.interval = this.firstInterval;
    if (o.remembered === true) {
      this.over = true;
      this.retiredBy = 'remembered';
      this.decided = true;
      this.mode = 'plain';
      this.probes = 0;
    }
  }

  /** The mode of probe round i: blocks of `block` rounds, `first` in blocks 0 and 2. */
  private planned(i: number): RoundMode {
    const other: RoundMode = this.first === 'speculate' ? 'plain' : 'speculate';
    return Math.floor(i / this.block) % 2 === 0 ? this.first : other;
  }

  next(): RoundMode {
    return this.over ? 'plain' : this.probing ? this.planned(this.step) : this.mode;
  }

  retired(): boolean {
    return this.over;
  }

  setDepth(depth: number): void {
    if (!(Number.isInteger(depth) && depth >= 1)) throw new DsvError(`AdaptiveSpeculation: depth must be a positive integer, got ${depth}`);
    this.depth = depth;
  }

  record(mode: RoundMode, ms: number, tokens: number): void {
    this.emitted[mode] += tokens;
    if (tokens === 0) {
      // work without a token: the modules' catch-up, which only speculation needs. Inside a
      // probe (after its first block) it catches up on the probe's own plain block: charged to
      // this probe's speculation; else it is the upkeep of a plain run's rows
      const t = Math.max(0, ms);
      this.catchUpMs += t;
      this.catchUpRows += this.lagTokens;
      this.lagTokens = 0;
      if (this.probing && this.step > 0) this.probeCatchMs += t;
      return;
    }
    // after a speculative round the modules' rows are final; plain steps leave rows behind
    this.lagTokens = mode === 'plain' ? this.lagTokens + tokens : 0;
    if (this.over) return;
    if (this.probing) {
      if (mode === 'speculate') {
        this.probeSpecTokens += tokens;
        this.probeSpecMs += Math.max(0, ms);
        this.probeSpecRounds++;
      }
      // a block's first round pays for the switch (caches, JIT): not measured
      if (mode === this.planned(this.step) && this.step % this.block !== 0) {
        this.ms[mode].push(Math.max(0, ms));
        this.toks[mode].push(tokens);
      }
      if (++this.step >= (this.decided ? 2 : 4) * this.block || (!this.decided && this.step === 2 * this.block && this.boundLoses())) this.decide();
    } else if (mode === this.mode) {
      this.runLeft -= tokens;
      if (mode === 'speculate') {
        // watch a speculative run: acceptance moves with the text; when its last WATCH rounds
        // cost more per token than the latest plain steps, probe now
        this.ms.speculate.push(Math.max(0, ms));
        this.toks.speculate.push(tokens);
        if (this.ms.speculate.length > WATCH) {
          this.ms.speculate.shift();
          this.toks.speculate.shift();
        }
        if (this.ms.speculate.length === WATCH && this.perToken('speculate') > this.cost.plain) this.runLeft = 0;
      }
      if (this.runLeft <= 0) this.startProbe();
    }
  }

  /** The bound, checked early in the first probe (after its first speculative and plain blocks):
   * true when the speculative rounds measured so far, with every draft accepted, would lose to
   * the plain steps measured so far. The catch-up the probe causes comes later (before its
   * second speculative block), so this round cost leaves it out: it can only understate the
   * cost, and a loss found without it stands. The first probe then ends at once (decide() finds
   * the same bound and retires): half the probe's speculative rounds and none of its catch-up. */
  private boundLoses(): boolean {
    if (!this.retireBound || this.ms.speculate.length === 0 || this.ms.plain.length === 0) return false;
    const round = median(this.ms.speculate) + (this.probeSpecRounds > 0 ? this.probeCatchMs / this.probeSpecRounds : 0);
    return round / (this.depth + 1) >= this.perToken('plain') * (1 - this.margin);
  }

  /** Mode m's cost per token over its rounds held: the median round's over the mean tokens. */
  private perToken(m: RoundMode): number {
    const n = this.toks[m].reduce((x, y) => x + y, 0);
    return n > 0 ? median(this.ms[m]) / (n / this.toks[m].length) : NaN;
  }

  /** The end of a probe: run the cheaper mode for `interval` tokens. A mode's cost per token
   * is its median round's cost over its mean tokens per round (robust to a preempted round);
   * speculation's includes the catch-up this probe caused, per speculative token. */
  private decide(): void {
    this.probing = false;
    if (this.ms.speculate.length > 0) this.roundCost = median(this.ms.speculate) + (this.probeSpecRounds > 0 ? this.probeCatchMs / this.probeSpecRounds : 0);
    for (const m of ['speculate', 'plain'] as const) {
      let c = this.perToken(m);
      if (m === 'speculate' && this.probeSpecTokens > 0) c += this.probeCatchMs / this.probeSpecTokens;
      if (Number.isFinite(c)) this.cost[m] = c;
      this.ms[m].length = 0;
      this.toks[m].length = 0;
    }
    const best: RoundMode = this.cost.speculate < this.cost.plain * (1 - this.margin) ? 'speculate' : 'plain';
    if (this.decided && best !== this.mode) this.switches++;
    if (this.decided && best === this.mode) this.interval = Math.min(this.maxInterval, this.interval * 2);
    else if (this.decided) this.interval = this.firstInterval;
    if (best === 'plain' && this.cost.plain > 0) {
      // the next re-probe runs one block of speculation (this probe's tokens per block) and its
      // catch-up: its expected extra cost over plain, kept under budget x the run's cost
      const blocks = this.decided ? 1 : 2;
      const loss = (this.probeSpecMs + this.probeCatchMs - this.probeSpecTokens * this.cost.plain) / blocks;
      const need = Math.ceil(loss / (this.budget * this.cost.plain));
      if (need > this.interval) this.interval = Math.min(4 * this.maxInterval, need);
    }
    this.decided = true;
    this.mode = best;
    this.runLeft = this.interval;
    this.losing = best === 'plain' && this.cost.speculate >= this.cost.plain ? this.losing + 1 : 0;
    if (this.retireAfter > 0 && this.losing >= this.retireAfter && this.upkeep() > this.budget * this.cost.plain) this.retire('losing');
    // the bound: with every draft accepted a round yields depth + 1 tokens; if even that loses,
    // no text makes speculation pay
    if (this.retireBound && best === 'plain' && this.roundCost / (this.depth + 1) >= this.cost.plain * (1 - this.margin)) this.retire('bound');
  }

  private retire(why: 'losing' | 'bound' | 'remembered'): void {
    if (this.over) return;
    this.over = true;
    this.retiredBy = why;
  }

  /** Catch-up ms per plain token the modules skipped (NaN before a catch-up). */
  private upkeep(): number {
    return this.catchUpRows > 0 ? this.catchUpMs / this.catchUpRows : NaN;
  }

  private startProbe(): void {
    this.probes++;
    this.ms.speculate.length = 0;
    this.toks.speculate.length = 0;
    this.probing = true;
    this.step = 0;
    this.probeCatchMs = 0;
    this.probeSpecTokens = 0;
    this.probeSpecMs = 0;
    this.probeSpecRounds = 0;
    this.first = this.mode === 'speculate' ? 'plain' : 'speculate';
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
      catchUpMs: this.catchUpMs,
      interval: this.interval,
      upkeepMsPerToken: this.upkeep(),
      retired: this.over,
      retiredBy: this.retiredBy,
      speculativeMsPerRound: this.roundCost,
    };
  }
}
