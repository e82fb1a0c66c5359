/**
 * The run's `metrics.jsonl`: one JSON object per line.
 *   {"type":"step", step, loss, lm, mtp, balance, lr, grad_norm, tokens_per_s, mtp_lambda,
 *    layers: {"<layer>": {load: [E], maxvio, bias: [E]}}, fp8?: true}  (fp8: an FP8 training step)
 *   {"type":"eval", step, val_loss, val_lm, val_mtp}
 *   {"type":"skip", step, reason, consecutive}
 * `step` counts optimizer steps taken after the record (1 after the first step).
 */
import * as fs from 'node:fs';
import { writeFileAtomic } from '../io/atomic-write.js';
import { DsvError } from '../errors.js';

export interface LayerStats {
  load: number[];
  maxvio: number;
  bias: number[];
}

export interface StepRecord {
  type: 'step';
  step: number;
  loss: number;
  lm: number;
  mtp: number;
  balance: number;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
  mtp_lambda: number;
  layers: Record<string, LayerStats>;
  /** Present (true) on steps trained with FP8 mixed precision (paper §3.3; TrainOptions.fp8). */
  fp8?: boolean;
  /** Present on steps trained in a precision other than fp32 ('bf16' or 'fp8'; TrainOptions.precision). */
  precision?: 'bf16' | 'fp8';
}

export interface EvalRecord {
  type: 'eval';
  step: number;
  val_loss: number;
  val_lm: number;
  val_mtp: number;
}

export interface SkipRecord {
  type: 'skip';
  step: number;
  reason: string;
  consecutive: number;
}

export type MetricRecord = StepRecord | EvalRecord | SkipRecord;

/** JSON.stringify that writes non-finite numbers as null (JSON has no NaN). */
export function toJsonLine(r: MetricRecord): string {
  return JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v));
}

/** Appends records to metrics.jsonl (one write per record, flushed by the OS). */
export class MetricsWriter {
  constructor(readonly file: string) {}

  append(r: MetricRecord): void {
    fs.appendFileSync(this.file, toJsonLine(r) + '\n');
  }

  /**
   * Drops records past `step`, and a torn last line: on resume from a checkpoint of `step`, the
   * file then holds exactly the records an uninterrupted run had written by then.
   */
  truncateAfter(step: number): void {
    if (!fs.existsSync(this.file)) return;
    const kept = readMetrics(this.file).filter((r) => r.step <= step);
    writeFileAtomic(this.file, kept.map((r) => toJsonLine(r) + '\n').join(''));
  }

  /** Flushes the records to disk (before a checkpoint, so they are never behind it after a crash). */
  sync(): void {
    if (!fs.existsSync(this.file)) return;
    const fd = fs.openSync(this.file, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
/** A number, null (a non-finite one) or absent (a field older runs did not write). */
const isNum = (x: unknown): boolean => typeof x === 'number' || x === null || x === undefined;

/** Whether r's fields have the types readers expect (a step needs its losses; layers: what the report draws). */
function wellFormed(r: Record<string, unknown>): boolean {
  if (r['type'] === 'eval') return ['val_loss', 'val_lm', 'val_mtp'].every((k) => isNum(r[k]));
  if (r['type'] !== 'step') return true;
  const layers = r['layers'];
  return typeof r['loss'] === 'number' && typeof r['lm'] === 'number' && ['mtp', 'balance', 'lr', 'grad_norm', 'tokens_per_s', 'mtp_lambda'].every((k) => isNum(r[k])) &&
    (layers === undefined || (isObject(layers) && Object.values(layers).every((l) => isObject(l) && Array.isArray(l['load']) && Array.isArray(l['bias']) && isNum(l['maxvio']))));
}

/** Reads metrics.jsonl; a torn last line (interrupted write) is ignored. */
export function readMetrics(file: string): MetricRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DsvError(`${file}: cannot read metrics (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const lines = text.split('\n').filter((l) => l.trim().length > 0);
  const out: MetricRecord[] = [];
  lines.forEach((line, i) => {
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch {
      if (i !== lines.length - 1) throw new DsvError(`${file}: line ${i + 1} is not valid JSON`);
      return;
    }
    if (!isObject(r) || typeof r['step'] !== 'number') return;
    if (!wellFormed(r)) throw new DsvError(`${file}: line ${i + 1} is not a dsv3 metrics record (a field is missing or of the wrong type)`);
    out.push(r as unknown as MetricRecord);
  });
  return out;
}
