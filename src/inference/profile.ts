/**
 * Per-phase wall-time accounting of decode steps: where a token's time goes. The engine calls
 * `lap(phase)` at the end of each phase when a profiler is attached (one `performance.now()`
 * per call, ~30 per layer); with no profiler attached the engine pays one null check per phase.
 */

/** The phases of one forward step, in execution order. */
export const PHASES = [
  'embed', //          token embedding rows (MTP: + enorm/hnorm/eh_proj)
  'attn.q', //         input RMSNorm, q_a -> norm -> q_b (or q_proj), absorbed q_lat = W^UK^T q^C, rope on q^R
  'attn.kv', //        kv_a_proj, kv_a_layernorm, rope on k^R, append to the latent cache
  'attn.core', //      attention over the latent cache (one shared KV head)
  'attn.out', //       W^UV per head, o_proj (+ residual)
  'ffn.router', //     post-attention RMSNorm, router GEMV, scores, group-limited top-k, gates
  'ffn.experts', //    the selected routed experts (+ residual)
  'ffn.shared', //     shared expert, or the dense SwiGLU MLP (+ residual)
  'head', //           final RMSNorm and the LM head (MTP: shared_head)
] as const;

export type Phase = (typeof PHASES)[number];

const INDEX: Record<Phase, number> = Object.fromEntries(PHASES.map((p, i) => [p, i])) as Record<Phase, number>;

/**
 * 'wall': performance.now(); 'cpu': this process's CPU time (process.cpuUsage, all threads, µs
 * resolution), which on a shared machine is not inflated by time other processes take the cores.
 */
export type ProfileClock = 'wall' | 'cpu';

function cpuNow(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

export class PhaseProfiler {
  private readonly acc = new Float64Array(PHASES.length);
  private last = 0;
  private readonly now: () => number;
  /** Steps recorded (the caller counts them with `endStep`). */
  steps = 0;

  constructor(readonly clock: ProfileClock = 'wall') {
    this.now = clock === 'cpu' ? cpuNow : () => performance.now();
  }

  /** Starts the clock of a new step (or of a phase sequence). */
  start(): void {
    this.last = this.now();
  }

  /** Charges the time since the previous lap (or start) to `phase`. */
  lap(phase: Phase): void {
    const t = this.now();
    this.acc[INDEX[phase]]! += t - this.last;
    this.last = t;
  }

  endStep(): void {
    this.steps++;
  }

  reset(): void {
    this.acc.fill(0);
    this.steps = 0;
  }

  /** Milliseconds per step of each phase (rounded to microseconds), and their total. */
  perStep(): Record<Phase | 'total', number> {
    const out = {} as Record<Phase | 'total', number>;
    const n = Math.max(1, this.steps);
    let total = 0;
    for (const p of PHASES) {
      const ms = this.acc[INDEX[p]]! / n;
      total += ms;
      out[p] = Math.round(ms * 1000) / 1000;
    }
    out.total = Math.round(total * 1000) / 1000;
    return out;
  }
}
