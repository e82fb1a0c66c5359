/**
 * Runs an experiment: its arms × seeds, one after the other in this process (seed 0's arms
 * first, then seed 1's ...), with one progress
 * line over the whole experiment (arm, seed, step, ETA) on stderr. After every finished pair,
 * DIR/results.json (atomically), DIR/index.html and DIR/key.svg (the key chart alone) are rewritten, so an interrupted experiment
 * keeps what it finished and `resume` skips those (arm, seed) pairs (same settings and steps).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DsvError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-write.js';
import { fmtDuration } from '../train/progress.js';
import type { Arm, Experiment, ExperimentResults, RunRecord } from './experiment.js';
import { buildExperimentHtml, keySvg } from './page.js';
import { gitCommit, machine } from './provenance.js';
import { stats, verdict, type Stats } from './verdict.js';

export interface ExperimentOptions {
  seeds: number;
  /** The first seed (default 0): the runs use seeds first_seed .. first_seed + seeds − 1 (`--seed-offset`). */
  seedOffset?: number;
  steps?: number;
  out: string;
  quick: boolean;
  resume: boolean;
  /** The command line, as recorded. */
  command: string;
  /** Progress output (default stderr); null: none. */
  progress?: (NodeJS.WritableStream & { isTTY?: boolean }) | null;
}


/** JSON without NaN/Infinity (as null). */
function toJson(x: unknown): string {
  return JSON.stringify(x, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1) + '\n';
}

/** The runs of a previous results.json of this experiment in `dir` (none if absent). */
function previousRuns(file: string, name: string): RunRecord[] {
  if (!fs.existsSync(file)) return [];
  return readResults(file, name).runs;
}

/** A results.json of experiment `name` (NaN restored where JSON holds null); a DsvError naming the file if it is not one. */
export function readResults(file: string, name: string): ExperimentResults {
  if (!fs.existsSync(file)) throw new DsvError(`${file}: no such file (run dsv3 experiment ${name} first, or name its directory with --out)`);
  let r: unknown;
  try {
    r = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new DsvError(`${file}: not valid JSON (${(e as Error).message}); remove it, or choose another --out`);
  }
  const o = r as Partial<ExperimentResults> | null;
  if (!o || typeof o !== 'object' || !Array.isArray(o.runs)) throw new DsvError(`${file}: not a dsv3 experiment results file`);
  if (o.experiment !== name) throw new DsvError(`${file}: holds experiment '${String(o.experiment)}', not '${name}'; choose another --out`);
  // JSON has no NaN: a null final or curve point was a non-finite number
  const nan = (v: unknown): number => (typeof v === 'number' ? v : NaN);
  const runs = o.runs.filter((x) => x && typeof x.arm === 'string' && Number.isInteger(x.seed)).map((x) => ({
    ...x,
    finals: Object.fromEntries(Object.entries(x.finals ?? {}).map(([k, v]) => [k, nan(v)])),
    curves: Object.fromEntries(Object.entries(x.curves ?? {}).map(([k, c]) => [k, { x: c.x.map(nan), y: c.y.map(nan) }])),
  }));
  if (!Array.isArray(o.arms) || typeof o.date !== 'string' || !o.machine) throw new DsvError(`${file}: a results file without arms, date or machine`);
  return { ...(o as ExperimentResults), runs };
}

class Bar {
  private lastLen = 0;
  private readonly t0 = performance.now();
  constructor(private readonly out: (NodeJS.WritableStream & { isTTY?: boolean }) | null, private readonly total: number) {}
  private lastPrint = -Infinity;

  update(done: number, what: string, force = false): void {
    if (!this.out) return;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const el = (performance.now() - this.t0) / 1000;
    const eta = done > 0 ? fmtDuration((el / done) * (this.total - done)) : '?';
    const bar = '#'.repeat(Math.round(frac * 20)).padEnd(20, '-');
    const line = `[${bar}] ${what} · ${Math.round(frac * 100)}% · eta ${eta}`;
    if (this.out.isTTY) {
      this.out.write('\r' + line + ' '.repeat(Math.max(0, this.lastLen - line.length)));
      this.lastLen = line.length;
    } else if (force || el - this.lastPrint >= 10) {
      this.lastPrint = el;
      this.out.write(line + '\n');
    }
  }

  done(): void {
    if (this.out?.isTTY && this.lastLen > 0) this.out.write('\n');
  }
}

const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Runs `exp` (see the module comment) and returns what results.json holds. */
export async function runExperiment(exp: Experiment, o: ExperimentOptions): Promise<ExperimentResults> {
  const plan = exp.plan({ quick: o.quick, ...(o.steps !== undefined ? { steps: o.steps } : {}) });
  const file = path.join(o.out, 'results.json');
  const seedOffset = o.seedOffset ?? 0;
  const seeds = Array.from({ length: o.seeds }, (_, i) => seedOffset + i);
  const prev = o.resume ? previousRuns(file, exp.name) : [];
  if (!o.resume) {
    let other: unknown = null;
    try {
      other = (JSON.parse(fs.readFileSync(file, 'utf8')) as { experiment?: unknown }).experiment;
    } catch {
      // no (readable) results.json: nothing to protect
    }
    if (typeof other === 'string' && other !== exp.name) throw new DsvError(`${file}: holds experiment '${other}', not '${exp.name}'; choose another --out`);
  }
  const kept = (arm: Arm, seed: number): RunRecord | undefined =>
    prev.find((r) => r.arm === arm.name && r.seed === seed && r.steps === plan.steps && sameJson(r.settings, { ...plan.settings, ...arm.settings }));
  const runs: RunRecord[] = [];
  const todo: Array<[Arm, number]> = [];
  // seed by seed, every arm of a seed before the next seed: an interrupted experiment keeps whole seeds
  for (const seed of seeds) {
    for (const arm of plan.arms) {
      const k = kept(arm, seed);
      if (k) runs.push(k);
      else todo.push([arm, seed]);
    }
  }
  fs.mkdirSync(o.out, { recursive: true });
  const base = {
    experiment: exp.name, summary: exp.summary, source: exp.source, command: o.command, commit: gitCommit(), machine: machine(),
    quick: o.quick, seeds: o.seeds, first_seed: seedOffset, steps: plan.steps, settings: plan.settings, arms: plan.arms,
  };
  const save = (): ExperimentResults => {
    const summary: Record<string, Record<string, Stats>> = {};
    for (const arm of plan.arms) {
      const mine = runs.filter((r) => r.arm === arm.name);
      const keys = [...new Set(mine.flatMap((r) => Object.keys(r.finals)))];
      summary[arm.name] = Object.fromEntries(keys.map((k) => [k, stats(mine.map((r) => r.finals[k] ?? NaN))]));
    }
    const res: ExperimentResults = { ...base, date: new Date().toISOString(), runs: [...runs], summary_by_arm: summary, verdicts: exp.claims(runs, plan.arms).map(verdict) };
    writeFileAtomic(file, toJson(res));
    writeFileAtomic(path.join(o.out, 'index.html'), buildExperimentHtml(exp, res));
    writeFileAtomic(path.join(o.out, 'key.svg'), keySvg(exp, res));
    return res;
  };
  const out = o.progress === undefined ? process.stderr : o.progress;
  if (todo.length < plan.arms.length * seeds.length) out?.write(`${exp.name}: ${plan.arms.length * seeds.length - todo.length} finished (arm, seed) pairs kept from ${file}\n`);
  const bar = new Bar(out, todo.length * plan.steps);
  for (const [i, [arm, seed]] of todo.entries()) {
    const dir = path.join(o.out, 'runs', `${arm.name}-seed${seed}`);
    fs.rmSync(dir, { recursive: true, force: true }); // what an interrupted run left
    const what = (step: number): string => `run ${i + 1}/${todo.length} ${arm.name} seed ${seed} step ${step}/${plan.steps}`;
    bar.update(i * plan.steps, what(0), true);
    const t0 = performance.now();
    const m = await plan.run(arm, { seed, dir, tick: (step) => bar.update(i * plan.steps + step, what(step)) });
    runs.push({ arm: arm.name, seed, steps: plan.steps, settings: { ...plan.settings, ...arm.settings }, seconds: (performance.now() - t0) / 1000, date: new Date().toISOString(), ...m });
    bar.update((i + 1) * plan.steps, what(plan.steps), true);
    save();
  }
  bar.done();
  return save();
}
