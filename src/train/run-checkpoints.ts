/**
 * Training checkpoints. Each one is a directory `RUN_DIR/checkpoint-<step>` in Hugging Face
 * layout (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with the chat template,
 * generation_config.json), plus
 * `trainer_state/` with everything needed to continue bit-exactly: `state.json` (step, data
 * iterator position, RNG state, bias EMA, counters) and `optimizer.safetensors` (the AdamW
 * moments `exp_avg.<param>` / `exp_avg_sq.<param>`, F32 or BF16).
 *
 * A checkpoint is written into a temporary directory `.checkpoint-<step>.tmp-*`, every file
 * fsynced (state.json last: a directory holding it is complete), then renamed into place;
 * `RUN_DIR/latest` (written atomically) then names it. When a step is saved again, `latest`
 * names the complete temporary copy while the old one is swapped out, so at every instant a
 * crash (kill -9, power loss) leaves `latest` naming a complete checkpoint, or a copy since
 * renamed to checkpoint-<step>, which the loader then takes. A removed checkpoint is renamed
 * to a temporary name first, so no checkpoint-<step> is ever partial. Each save (and
 * `tidyRunDir` on resume) deletes the temporaries a killed run left and prunes to `keep`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fsyncDir, writeFileAtomic } from '../io/atomic-write.js';
import { DsvError } from '../errors.js';
import { SafetensorsFile } from '../io/safetensors-read.js';
import { type TensorToWrite, writeSafetensors } from '../io/safetensors-write.js';
import type { AdamWState, Moment } from './optimizer.js';

export const TRAINER_STATE_DIR = 'trainer_state';
const LATEST = 'latest';
const CKPT_RE = /^checkpoint-(\d+)$/;
/** Temporaries of a save or a removal (directories), and of writeFileAtomic (files). */
const TEMP_RE = /^\..+\.(tmp|old)-\d+-[0-9a-z]+$/;

export interface CheckpointContents {
  /** config.json (HF). */
  config: Record<string, unknown>;
  /** model.safetensors tensors, HF names (the MTP copies of shared tensors included). */
  tensors: Record<string, TensorToWrite>;
  /** tokenizer.json text, when the run has a tokenizer. */
  tokenizerJson?: string;
  /** tokenizer_config.json (BOS / EOS tokens, chat template), written with tokenizer.json. */
  tokenizerConfig?: Record<string, unknown>;
  generationConfig: Record<string, unknown>;
  /** trainer_state/state.json (any JSON). */
  trainerState: Record<string, unknown>;
  optimizer: AdamWState;
}

const json = (value: unknown): string => JSON.stringify(value, null, 2) + '\n';
const complete = (dir: string): boolean => fs.existsSync(path.join(dir, TRAINER_STATE_DIR, 'state.json'));
const tempName = (name: string, kind: 'tmp' | 'old'): string => `.${name}.${kind}-${process.pid}-${Math.random().toString(36).slice(2)}`;

/** Deletes checkpoint `name` of runDir: renamed to a temporary name first, then removed. */
function removeCheckpoint(runDir: string, name: string): void {
  const old = path.join(runDir, tempName(name, 'old'));
  fs.renameSync(path.join(runDir, name), old);
  fs.rmSync(old, { recursive: true, force: true });
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
 * the newest `keep` checkpoints (0: all). Returns the checkpoint directory.
 */
export function saveTrainingCheckpoint(runDir: string, step: number, c: CheckpointContents, keep = 2): string {
  fs.mkdirSync(runDir, { recursive: true });
  const name = checkpointDirName(step);
  const final = path.join(runDir, name);
  const tmpName = tempName(name, 'tmp');
  const tmp = path.join(runDir, tmpName);
  const st = path.join(tmp, TRAINER_STATE_DIR);
  fs.mkdirSync(st, { recursive: true });
  let pointed = false; // `latest` names tmp: it must stay
  try {
    writeFileAtomic(path.join(tmp, 'config.json'), json(c.config));
    writeFileAtomic(path.join(tmp, 'generation_config.json'), json(c.generationConfig));
    if (c.tokenizerJson !== undefined) writeFileAtomic(path.join(tmp, 'tokenizer.json'), c.tokenizerJson);
    if (c.tokenizerJson !== undefined && c.tokenizerConfig !== undefined) writeFileAtomic(path.join(tmp, 'tokenizer_config.json'), json(c.tokenizerConfig));
    writeSafetensors(path.join(tmp, 'model.safetensors'), c.tensors);
    writeSafetensors(path.join(st, 'optimizer.safetensors'), optimizerTensors(c.optimizer), {
      step: String(c.optimizer.step),
      moment_dtype: c.optimizer.momentDtype,
    });
    writeFileAtomic(path.join(st, 'state.json'), json(c.trainerState)); // last: it marks the directory complete
    if (fs.existsSync(final)) {
      writeFileAtomic(path.join(runDir, LATEST), tmpName + '\n'); // complete, while the old copy goes
      pointed = true;
      removeCheckpoint(runDir, name);
    }
    fs.renameSync(tmp, final);
    fsyncDir(runDir);
  } catch (e) {
    if (!pointed) fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  writeFileAtomic(path.join(runDir, LATEST), name + '\n');
  tidyRunDir(runDir, keep);
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

/**
 * Removes what killed runs left in runDir (temporary files and directories) and all but the
 * newest `keep` checkpoints (0: all); the one `latest` resolves to always stays.
 */
export function tidyRunDir(runDir: string, keep: number): void {
  const current = path.basename(latestCheckpoint(runDir) ?? '');
  for (const f of fs.readdirSync(runDir)) if (TEMP_RE.test(f) && f !== current) fs.rmSync(path.join(runDir, f), { recursive: true, force: true });
  if (keep <= 0) return;
  const steps = listCheckpoints(runDir);
  for (const s of steps.slice(0, Math.max(0, steps.length - keep))) if (checkpointDirName(s) !== current) removeCheckpoint(runDir, checkpointDirName(s));
}

/**
 * The newest complete checkpoint directory of a run, or null: the one `latest` names (or, when
 * that was a temporary copy since renamed into place, checkpoint-<step>); when `latest` is
 * missing or names nothing complete, the complete checkpoint of the highest step.
 */
export function latestCheckpoint(runDir: string): string | null {
  let name = '';
  try {
    name = fs.readFileSync(path.join(runDir, LATEST), 'utf8').trim();
  } catch {
    // no pointer: search
  }
  if (/^(checkpoint-\d+|\.checkpoint-\d+\.tmp-\d+-[0-9a-z]+)$/.test(name)) {
    for (const n of [name, name.replace(/^\.(checkpoint-\d+)\..*$/, '$1')]) if (complete(path.join(runDir, n))) return path.join(runDir, n);
  }
  const steps = listCheckpoints(runDir);
  for (let i = steps.length - 1; i >= 0; i--) {
    const dir = path.join(runDir, checkpointDirName(steps[i]!));
    if (complete(dir)) return dir;
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
  let state: unknown;
  try {
    state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  } catch (e) {
    throw new DsvError(`${stateFile}: not a readable JSON file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (typeof state !== 'object' || state === null || Array.isArray(state)) throw new DsvError(`${stateFile}: expected a JSON object`);
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
    return { state: state as Record<string, unknown>, optimizer: { step, momentDtype, m, v } };
  } finally {
    f.close();
  }
}
