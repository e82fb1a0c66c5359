/**
 * Single-process pipeline runtime: executes a PipelineSchedule (DualPipe, DualPipeV, 1F1B, ZB1P;
 * DeepSeek-V3 report §3.2.1; docs/DUALPIPE.md) on a DeepSeek-V3 model for one batch split into
 * micro-batches.
 *
 * Every rank owns its own parameters (`ParamRegistry`) and the stages of its chunks
 * (`schedule.rank_chunks`); DualPipe's two replicas of each stage live on two ranks (§2.2) and
 * `reduceGradients` sums them after the step. Each rank runs its compute list in order
 * (`RankRunner`, rank-runner.ts: dataflow, W FIFO, message tags); this executor interleaves the
 * ranks round robin, advancing a rank whenever its next op's inputs exist (the dataflow model of
 * docs/DUALPIPE.md §5.1 and §5.4: sends are eager and buffered, an op blocks only on the messages it
 * needs), and reports a full pass in which no rank can advance as a deadlock.
 *
 * Data enters as in §3: DualPipe's stream 0 (chunk 0) gets the first half of the batch's
 * micro-batches, stream 1 the second half; the other schedules have one stream. The rank holding
 * a stream's last stage reads that micro-batch's tokens for the labels and the MTP ids (§2.4).
 */
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { ParamSource } from '../model/params.js';
import type { LossReport } from '../objective/losses.js';
import { describeOp, type Mailbox, type PipelineRank, RankRunner, streamOf } from './rank-runner.js';
import { ParamRegistry } from '../model/param-registry.js';
import { allReduceGrads } from './replicas.js';
import type { ComputeOp, PipelineSchedule } from './schedule-types.js';
import { PipelineStage, type StageBuildOptions, type StageLossOptions, type StageMicroBatch } from './stages.js';

export interface PipelineStepResult {
  /** Loss report of each micro-batch of the step, in batch order (unscaled values). */
  losses: LossReport[];
  /** Each rank's executed compute ops, in order (W with the (chunk, mb) it actually popped). */
  executed: ComputeOp[][];
  /** Expert loads per MoE layer, summed over the step's micro-batches (for the bias update). */
  loads: Map<number, Int32Array>;
}

/** Builds every rank's parameters and stages; `source(rank)` gives a rank's tensors (every rank
 * must get identical values, e.g. `new RandomParams(seed, std)` or `modelParamSource(model)`). */
export function buildPipelineRanks(cfg: ModelConfig, schedule: PipelineSchedule, source: (rank: number) => ParamSource, o: StageBuildOptions = {}): PipelineRank[] {
  const out: PipelineRank[] = [];
  for (let r = 0; r < schedule.ranks; r++) out.push(buildPipelineRank(cfg, schedule, r, source(r), o));
  return out;
}

/** Rank `rank`'s parameters and stages (`schedule.rank_chunks[rank]`). */
export function buildPipelineRank(cfg: ModelConfig, schedule: PipelineSchedule, rank: number, source: ParamSource, o: StageBuildOptions = {}): PipelineRank {
  const params = new ParamRegistry(source);
  const chunks = (schedule.rank_chunks[rank] ?? []).map((c) => ({
    chunk: c.chunk,
    stream: streamOf(schedule.algo, c.chunk),
    stage: new PipelineStage(cfg, params, c.stage, schedule.stages, o),
  }));
  if (chunks.length === 0) throw new DsvError(`${schedule.algo} schedule: rank ${rank} holds no chunk`);
  return { rank, params, chunks };
}

/** Tokens [rows, S+1] cut into `n` micro-batches of rows/n consecutive rows each. */
export function splitMicroBatches(tokens: Int32Array, rows: number, n: number, vocab: number): StageMicroBatch[] {
  if (!Number.isInteger(rows) || rows < 1 || tokens.length % rows !== 0) throw new DsvError(`pipeline batch: ${tokens.length} token ids do not form ${rows} rows`);
  const S = tokens.length / rows - 1;
  if (S < 1) throw new DsvError(`pipeline batch: rows of ${S + 1} tokens; need at least 2 (S+1 with S >= 1)`);
  if (rows % n !== 0) throw new DsvError(`pipeline batch: ${rows} rows do not split into ${n} micro-batches of equal size`);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t < 0 || t >= vocab) throw new DsvError(`tokens: id ${t} at position ${i} is out of range for vocab_size ${vocab}`);
  }
  const B = rows / n;
  const w = B * (S + 1);
  return Array.from({ length: n }, (_, j) => ({ tokens: tokens.subarray(j * w, (j + 1) * w), B, S }));
}

/** Merges the last stage's report of a micro-batch with the balance values of its other stages. */
export function mergeLossReport(last: LossReport, others: readonly Map<number, number>[]): LossReport {
  const per = new Map<number, number>(Object.entries(last.balance_per_layer).map(([k, v]) => [Number(k), v]));
  let extra = 0;
  for (const m of others) {
    for (const [l, v] of m) {
      if (per.has(l)) throw new DsvError(`balance loss of layer ${l} reported by two stages of one micro-batch`);
      per.set(l, v);
      extra += v;
    }
  }
  const balance_per_layer: Record<string, number> = {};
  for (const l of [...per.keys()].sort((a, b) => a - b)) balance_per_layer[String(l)] = per.get(l)!;
  return { ...last, total: last.total + extra, balance_total: last.balance_total + extra, balance_per_layer };
}

/** What the ranks of a step report, merged in rank order. */
export interface RankOutcome {
  executed: ComputeOp[];
  reports: Map<number, LossReport>;
  balances: Map<number, Map<number, number>[]>;
  loads: Map<number, Int32Array>;
}

/** The step's result from every rank's outcome (rank order). */
export function mergeRankOutcomes(schedule: PipelineSchedule, outs: readonly RankOutcome[]): PipelineStepResult {
  const losses: LossReport[] = [];
  for (let g = 0; g < schedule.microbatches; g++) {
    let rep: LossReport | undefined;
    const others: Map<number, number>[] = [];
    for (const o of outs) {
      const r = o.reports.get(g);
      if (r && rep) throw new DsvError(`micro-batch ${g} reached the last stage twice`);
      rep ??= r;
      others.push(...(o.balances.get(g) ?? []));
    }
    if (!rep) throw new DsvError(`${schedule.algo} schedule: micro-batch ${g} never reached the last stage`);
    losses.push(mergeLossReport(rep, others));
  }
  const loads = new Map<number, Int32Array>();
  for (const o of outs) {
    for (const [l, load] of o.loads) {
      const acc = loads.get(l);
      if (acc) for (let e = 0; e < acc.length; e++) acc[e]! += load[e]!;
      else loads.set(l, load.slice());
    }
  }
  return { losses, executed: outs.map((o) => o.executed), loads };
}

/** Runs steps of `schedule` on `ranks` (built by `buildPipelineRanks` for this schedule). */
export class PipelineExecutor {
  constructor(
    readonly schedule: PipelineSchedule,
    readonly ranks: PipelineRank[],
  ) {
    if (ranks.length !== schedule.ranks) throw new DsvError(`pipeline: ${ranks.length} ranks built for a ${schedule.ranks}-rank ${schedule.algo} schedule`);
    if (schedule.compute.length !== schedule.ranks) throw new DsvError(`${schedule.algo} schedule: compute lists for ${schedule.compute.length} ranks, expected ${schedule.ranks}`);
    ranks.forEach((r, i) => {
      if (r.rank !== i) throw new DsvError(`pipeline: rank ${r.rank} given at position ${i}`);
    });
  }

  /** Sums the gradients of every parameter's replicas and returns the sums by name (§2.2). */
  reduceGradients(): Map<string, Float32Array> {
    return allReduceGrads(this.ranks.map((r) => r.params));
  }

  zeroGrad(): void {
    for (const r of this.ranks) r.params.zeroGrad();
  }

  /**
   * One step on tokens [rows, S+1] (flat, `rows` rows), cut into schedule.microbatches
   * micro-batches. Gradients accumulate into each rank's parameters (call `reduceGradients`).
   */
  run(tokens: Int32Array, rows: number, o: StageLossOptions): PipelineStepResult {
    const sch = this.schedule;
    const mbs = splitMicroBatches(tokens, rows, sch.microbatches, this.ranks[0]!.chunks[0]!.stage.cfg.vocab_size);
    const store = new Map<string, Tensor>();
    const mailbox: Mailbox = {
      has: (key) => store.has(key),
      take: (key) => {
        const t = store.get(key);
        if (!t) throw new DsvError(`pipeline: message ${key} was never sent`);
        store.delete(key);
        return t;
      },
      send: (key, _to, t) => {
        if (store.has(key)) throw new DsvError(`pipeline: message ${key} sent twice`);
        store.set(key, t);
      },
    };
    const runners = this.ranks.map((r) => new RankRunner(sch, r, mbs, o, mailbox));
    const pc = runners.map(() => 0);
    for (;;) {
      let progressed = false;
      let done = true;
      runners.forEach((rr, r) => {
        const list = rr.ops;
        if (pc[r]! >= list.length) return;
        done = false;
        const op = list[pc[r]!]!;
        if (rr.needs(op).length > 0) return;
        rr.exec(op);
        pc[r]!++;
        progressed = true;
      });
      if (done) break;
      if (!progressed) {
        const blocked = runners.map((rr, r) => {
          const op = rr.ops[pc[r]!];
          return op ? `rank ${r} at op ${pc[r]} (${describeOp(op)}) waits for ${rr.needs(op).join(', ')}` : `rank ${r} done`;
        });
        throw new DsvError(`${sch.algo} schedule (${sch.ranks} ranks, ${sch.microbatches} mb) deadlocks: ${blocked.join('; ')}`);
      }
    }
    for (const rr of runners) rr.finish();
    if (store.size > 0) throw new DsvError(`pipeline: ${store.size} message(s) never received: ${[...store.keys()].slice(0, 4).join(', ')}`);
    return mergeRankOutcomes(sch, runners);
  }
}
