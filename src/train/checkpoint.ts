/**
 * Training checkpoints. Each one is a directory `RUN_DIR/checkpoint-<step>` in Hugging Face
 * layout (config.json, model.safetensors, tokenizer.json, generation_config.json), plus
 * `trainer_state/` with everything needed to continue bit-exactly: `state.json` (step, data
 * iterator position, RNG state, bias EMA, counters) and `optimizer.safetensors` (the AdamW
 * moments `exp_avg.<param>` / `exp_avg_sq.<param>`, F32 or BF16).
 *
 * A checkpoint is written into a temporary directory, every file flushed, then renamed into
 * place in one step; `RUN_DIR/latest` (written atomically) then names it. A crash at any point
 * leaves the previous checkpoint and pointer intact.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DsvError } from '../errors.js';
import { SafetensorsFile } from '../io/safetensors-read.js';
import { type TensorToWrite, writeAll, writeFileAtomic, writeSafetensors } from '../io/safetensors-write.js';
import type { AdamWState, Moment } from './optimizer.js';

export const TRAINER_STATE_DIR = 'trainer_state';
const LATEST = 'latest';
const CKPT_RE = /^checkpoint-(\d+)$/;

export interface CheckpointContents {
  /** config.json (HF). */
  config: Record<string, unknown>;
  /** model.safetensors tensors, HF names (the MTP copies of shared tensors included). */
  tensors: Record<string, TensorToWrite>;
  /** tokenizer.json text, when the run has a tokenizer. */
  tokenizerJson?: string;
  generationConfig: Record<string, unknown>;
  /** trainer_state/state.json (any JSON). */
  trainerState: Record<string, unknown>;
  optimizer: AdamWState;
}

/** Writes a JSON file atomically (temporary file, fsync, rename). */
export function writeJsonAtomic(file: string, value: unknown): void {
  const bytes = new TextEncoder().encode(JSON.stringify(value, null, 2) + '\n');
  writeFileAtomic(file, (fd) => writeAll(fd, bytes, file));
}

function writeTextAtomic(file: string, text: string): void {
  writeFileAtomic(file, (fd) => writeAll(fd, new TextEncoder().encode(text), file));
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // directories cannot be fsynced on every platform; the rename is still atomic
  }
}

export function checkpointDirName(step: number): string {
  return `checkpoint-${step}`;
}

/** Writes the optimizer moments as safetensors. */
export function optimizerTensors(s: AdamWState): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  const add = (key: string, m: Moment): void => {
    out[key] = m instanceof Uint16Array ? { dtype: 'bf16', shape: [m.length], data: m } : { dtype: 'f32', shape: [m.length], data: m };
  };
  for (const [n, m] of Object.entries(s.m)) add(`exp_avg.${n}`, m);
  for (const [n, v] of Object.entries(s.v)) add(`exp_avg_sq.${n}`, v);
  return out;
}

/**
 * Saves a checkpoint for `step` under runDir atomically, points `latest` at it and keeps only
 * the newest `keep` checkpoints. Returns the checkpoint directory.
 */
export function saveTrainingCheckpoint(runDir: string, step: number, c: CheckpointContents, keep = 2): string {
  fs.mkdirSync(runDir, { recursive: true });
  const name = checkpointDirName(step);
  const final = path.join(runDir, name);
  const tmp = path.join(runDir, `.${name}.tmp-${process.pid}-${Date.now().toString(36)}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmp, TRAINER_STATE_DIR), { recursive: true });
  try {
    writeJsonAtomic(path.join(tmp, 'config.json'), c.config);
    writeJsonAtomic(path.join(tmp, 'generation_config.json'), c.generationConfig);
    if (c.tokenizerJson !== undefined) writeTextAtomic(path.join(tmp, 'tokenizer.json'), c.tokenizerJson);
    writeSafetensors(path.join(tmp, 'model.safetensors'), c.tensors);
    const st = path.join(tmp, TRAINER_STATE_DIR);
    writeSafetensors(path.join(st, 'optimizer.safetensors'), optimizerTensors(c.optimizer), {
      step: String(c.optimizer.step),
      moment_dtype: c.optimizer.momentDtype,
    });
    writeJsonAtomic(path.join(st, 'state.json'), c.trainerState);
    fsyncDir(st);
    fsyncDir(tmp);
    if (fs.existsSync(final)) {
      const old = path.join(runDir, `.${name}.old-${process.pid}-${Date.now().toString(36)}`);
      fs.renameSync(final, old);
      fs.renameSync(tmp, final);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, final);
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  writeTextAtomic(path.join(runDir, LATEST), name + '\n');
  fsyncDir(runDir);
  pruneCheckpoints(runDir, keep, name);
  return final;
}

/** Steps of the checkpoints present in runDir, ascending. */
export function listCheckpoints(runDir: string): number[] {
  if (!fs.existsSync(runDir)) return [];
  return fs
    .readdirSync(runDir)
    .map((f) => CKPT_RE.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

function pruneCheckpoints(runDir: string, keep: number, current: string): void {
  if (keep <= 0) return;
  const steps = listCheckpoints(runDir);
  for (const s of steps.slice(0, Math.max(0, steps.length - keep))) {
    const n = checkpointDirName(s);
    if (n !== current) fs.rmSync(path.join(runDir, n), { recursive: true, force: true });
  }
}

/** The newest complete checkpoint directory of a run (via `latest`), or null. */
export function latestCheckpoint(runDir: string): string | null {
  const p = path.join(runDir, LATEST);
  if (fs.existsSync(p)) {
    const name = fs.readFileSync(p, 'utf8').trim();
    const dir = path.join(runDir, name);
    if (CKPT_RE.test(name) && fs.existsSync(path.join(dir, TRAINER_STATE_DIR, 'state.json'))) return dir;
  }
  const steps = listCheckpoints(runDir);
  for (let i = steps.length - 1; i >= 0; i--) {
    const dir = path.join(runDir, checkpointDirName(steps[i]!));
    if (fs.existsSync(path.join(dir, TRAINER_STATE_DIR, 'state.json'))) return dir;
  }
  return null;
}

/**
 * Resolves a model location: a checkpoint directory (has config.json), or a run directory
 * (its latest checkpoint).
 */
export function resolveCheckpointDir(location: string): string {
  if (fs.existsSync(path.join(location, 'config.json'))) return location;
  const latest = latestCheckpoint(location);
  if (latest) return latest;
  throw new DsvError(`${location}: neither a checkpoint directory (config.json) nor a run directory with checkpoints`);
}

/** Reads trainer_state/ of a checkpoint: the state JSON and the optimizer moments. */
export function loadTrainerState(ckptDir: string): { state: Record<string, unknown>; optimizer: AdamWState } {
  const dir = path.join(ckptDir, TRAINER_STATE_DIR);
  const stateFile = path.join(dir, 'state.json');
  if (!fs.existsSync(stateFile)) throw new DsvError(`${ckptDir}: no ${TRAINER_STATE_DIR}/state.json (not a training checkpoint)`);
  const state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as Record<string, unknown>;
  const f = SafetensorsFile.open(path.join(dir, 'optimizer.safetensors'));
  try {
    const m: Record<string, Moment> = {};
    const v: Record<string, Moment> = {};
    let momentDtype: 'f32' | 'bf16' = (f.metadata?.['moment_dtype'] as 'f32' | 'bf16' | undefined) ?? 'f32';
    for (const key of f.names()) {
      const t = f.get(key);
      if (t.dtype !== 'f32' && t.dtype !== 'bf16') throw new DsvError(`${f.path}: ${key} has dtype ${t.dtype}, expected F32 or BF16`);
      momentDtype = t.dtype;
      const data = t.data as Moment;
      if (key.startsWith('exp_avg_sq.')) v[key.slice('exp_avg_sq.'.length)] = data;
      else if (key.startsWith('exp_avg.')) m[key.slice('exp_avg.'.length)] = data;
    }
    const step = Number(f.metadata?.['step'] ?? NaN);
    if (!Number.isInteger(step)) throw new DsvError(`${f.path}: missing optimizer step in the metadata`);
    return { state, optimizer: { step, momentDtype, m, v } };
  } finally {
    f.close();
  }
}
