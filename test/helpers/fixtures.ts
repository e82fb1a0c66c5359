/**
 * Golden-fixture access for tests: paths under test/fixtures (never ../shared), safetensors
 * files as Tensors (through the project's reader), meta.json, tolerances.json, and the
 * fixtures README's comparison rules.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Tensor } from '../../src/engine/tensor.js';
import { SafetensorsFile } from '../../src/io/safetensors-read.js';

/** Absolute path of test/fixtures/<rel> (from dist/test/helpers or test/helpers alike). */
export function fixturePath(rel = ''): string {
  return fileURLToPath(new URL(`../../../test/fixtures/${rel}`, import.meta.url));
}

/** Every tensor of a safetensors file as a Tensor (f32/i32/u8; bf16 kept as bf16 bits). */
export function readTensors(file: string): Record<string, Tensor> {
  const f = SafetensorsFile.open(file);
  try {
    const out: Record<string, Tensor> = {};
    for (const n of f.names()) {
      const t = f.get(n);
      out[n] = new Tensor(t.data, t.shape, t.dtype);
    }
    return out;
  } finally {
    f.close();
  }
}

export function readJson<T = Record<string, unknown>>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

export interface ModelFixtureMeta {
  batch: number;
  seq_len: number;
  decode_prefill: number;
  greedy_prompt_len: number;
  greedy_new_tokens: number;
  moe_layers: number[];
  input_ids: number[][];
}

/** The model-fixture float tolerance (max |got - exp| <= tol * max |exp|, per tensor). */
export function modelTolerance(): number {
  const t = readJson<{ model: { float_tensors_rel_to_max: number } }>(fixturePath('tolerances.json'));
  return t.model.float_tensors_rel_to_max;
}

/** max |got - exp| / max |exp| (shapes must match; NaN/inf give Infinity). */
export function relToMax(got: Tensor, exp: Tensor): number {
  const a = got.toF32Array();
  const e = exp.toF32Array();
  if (a.length !== e.length) return Infinity;
  let maxE = 0;
  let maxD = 0;
  for (let i = 0; i < e.length; i++) {
    const d = Math.abs(a[i]! - e[i]!);
    if (!(d <= Infinity)) return Infinity;
    maxD = Math.max(maxD, d);
    maxE = Math.max(maxE, Math.abs(e[i]!));
  }
  return maxE === 0 ? (maxD === 0 ? 0 : Infinity) : maxD / maxE;
}

/** Bit-identical float32 contents (+0 and -0 equal). */
export function bitExact(got: Tensor, exp: Tensor): boolean {
  const a = got.toF32Array();
  const e = exp.toF32Array();
  if (a.length !== e.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== e[i] && !(Number.isNaN(a[i]!) && Number.isNaN(e[i]!))) return false;
  return true;
}

export interface FixtureComparison {
  /** Per float tensor: rel-to-max error. */
  errors: Record<string, number>;
  /** Human-readable failures (empty when everything passes). */
  failures: string[];
}

/**
 * Compares every expected tensor (except `dequant.*`, checked separately) with the fixtures
 * README's rules: shapes and dtypes equal; floats within tol * max|exp|; `*.topk_idx` the
 * same set per token and the same stored order; `greedy.ids` exact.
 */
export function compareToExpected(got: Record<string, Tensor>, expected: Record<string, Tensor>, tol: number): FixtureComparison {
  const errors: Record<string, number> = {};
  const failures: string[] = [];
  for (const [name, exp] of Object.entries(expected)) {
    if (name.startsWith('dequant.')) continue;
    const g = got[name];
    if (!g) {
      failures.push(`${name}: missing from the output`);
      continue;
    }
    if (g.dtype !== exp.dtype || g.shape.join(',') !== exp.shape.join(',')) {
      failures.push(`${name}: got ${g.dtype} [${g.shape.join(', ')}], expected ${exp.dtype} [${exp.shape.join(', ')}]`);
      continue;
    }
    if (exp.dtype === 'i32') {
      const a = g.contiguous().i32();
      const e = exp.contiguous().i32();
      const K = exp.shape[exp.ndim - 1]!;
      for (let r = 0; r < e.length / K; r++) {
        const ga = Array.from(a.subarray(r * K, (r + 1) * K));
        const ea = Array.from(e.subarray(r * K, (r + 1) * K));
        if (ga.join() !== ea.join()) {
          const sameSet = [...ga].sort().join() === [...ea].sort().join();
          failures.push(`${name}: row ${r} is [${ga}], expected [${ea}]${sameSet ? ' (same set, different order)' : ''}`);
          break;
        }
      }
      continue;
    }
    const err = relToMax(g, exp);
    errors[name] = err;
    if (!(err <= tol)) failures.push(`${name}: max|diff|/max|exp| = ${err.toExponential(3)} > ${tol}`);
  }
  return { errors, failures };
}
