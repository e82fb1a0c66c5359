/**
 * Command-line flags and their domains. A command declares its flags as a table (name → Flag)
 * and `parseFlags` reads argv against it, checking every value before the command does any
 * work (no file created, no model built), so that each bad value is one UsageError worded the
 * same way for every flag of every command:
 *   --lr expects a number > 0, got '-1'
 *   --balance must be aux-free, aux-loss or none, got 'x'
 *   runs/nope: model directory not found (--model)
 * The tables are also what test/cli-fuzz.test.ts feeds malformed values to, flag by flag.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Flag, type FlagTable, type NumberRange, UsageError } from './command.js';
import { MAX_CHAIN_DEPTH } from '../inference/speculative.js';

export type FlagValues<S extends FlagTable> = { [K in keyof S]?: S[K] extends Flag<infer T> ? T : never };

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const INT_MAX = 2 ** 31 - 1;

function numberFlag(int: boolean, min: number, minOpen: boolean, max = Infinity, maxOpen = false): Flag<number> {
  const r: NumberRange = { int, min, minOpen, max, maxOpen };
  const lo = `${r.minOpen ? '>' : '>='} ${r.min}`;
  const noun = r.int ? 'an integer' : 'a number';
  const what =
    r.max === INT_MAX ? `${noun} ${lo} (< 2^31)` :
    Number.isFinite(r.max) ? `${noun} in ${r.minOpen ? '(' : '['}${r.min}, ${r.max}${r.maxOpen ? ')' : ']'}` : `${noun} ${lo}`;
  return {
    kind: 'number',
    what,
    range: r,
    parse(raw) {
      const x = NUMBER.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isFinite(x) || (r.int && !Number.isInteger(x))) return undefined;
      if (r.minOpen ? x <= r.min : x < r.min) return undefined;
      if (r.maxOpen ? x >= r.max : x > r.max) return undefined;
      return x;
    },
  };
}

/** An integer in [min, max] (by default at most 2^31 - 1: sizes and counts index Int32 arrays). */
export const int = (min = 0, max = INT_MAX): Flag<number> => numberFlag(true, min, false, max);
/** Native threads: the pool has at most 256 (native/src/threadpool.c). */
export const threads = (): Flag<number> => int(1, 256);
/** MTP draft depth (--draft-depth): 1 .. MAX_CHAIN_DEPTH (inference/speculative.ts); past the
 * checkpoint's modules the last module is chained on its own output. */
export const draftDepth = (): Flag<number> => int(1, MAX_CHAIN_DEPTH);
/** A TCP port (0: any free port, chosen by the system). */
export const port = (): Flag<number> => int(0, 65535);
export const positive = (): Flag<number> => numberFlag(false, 0, true);
export const nonNegative = (): Flag<number> => numberFlag(false, 0, false);
/** A number in [min, max] (open at min with `minOpen`). */
export const numberIn = (min: number, max: number, minOpen = false): Flag<number> => numberFlag(false, min, minOpen, max);
/** A number in [0, 1): an EMA factor or an AdamW β. */
export const fraction = (): Flag<number> => numberFlag(false, 0, false, 1, true);

export function oneOf<T extends string>(values: readonly T[]): Flag<T> {
  const what = values.length > 3 ? `one of ${values.join(', ')}` : `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}`;
  return { kind: 'enum', what, values, parse: (raw) => (values as readonly string[]).includes(raw) ? (raw as T) : undefined };
}

export const bool = (): Flag<true> => ({ kind: 'boolean', what: 'no value', parse: () => true });

/** Free text; empty only when `empty`. */
export const text = (empty = false): Flag<string> => ({ kind: 'text', what: 'a non-empty text', parse: (raw) => (raw !== '' || empty ? raw : undefined) });

/** Non-empty free text that may be given several times: the list of values. */
export const texts = (): Flag<string[]> => ({ kind: 'text', what: 'a non-empty text', repeatable: true, parse: (raw) => (raw !== '' ? [raw] : undefined) });

/** An existing file, directory or either ('path'); `noun` names it in messages. */
export function exists(noun: string, kind: 'file' | 'dir' | 'path'): Flag<string> {
  return {
    kind,
    what: noun,
    parse(raw) {
      const st = raw === '' ? undefined : stat(raw);
      return st && (kind === 'path' || (kind === 'dir' ? st.isDirectory() : st.isFile())) ? raw : undefined;
    },
  };
}

/** A path to write: a file in an existing directory, or a directory (created with its parents). */
export function out(type: 'file' | 'dir'): Flag<string> {
  return {
    kind: type === 'file' ? 'out-file' : 'out-dir',
    what: type === 'file' ? 'a file path in an existing directory' : 'a directory path that exists or can be created',
    parse(raw) {
      if (raw === '') return undefined;
      const st = stat(raw);
      if (type === 'dir') return st?.isDirectory() || (!st && creatable(raw)) ? raw : undefined;
      return st?.isDirectory() || !stat(path.dirname(raw))?.isDirectory() ? undefined : raw;
    },
  };
}

/** fs.statSync, or undefined where nothing can be found (ENOENT, ENOTDIR, EACCES, ...). */
function stat(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

/** Whether a directory can be created at `p`: its nearest existing ancestor is a writable directory. */
function creatable(p: string): boolean {
  let at = path.resolve(p);
  while (!fs.existsSync(at) && path.dirname(at) !== at) at = path.dirname(at);
  try {
    fs.accessSync(at, fs.constants.W_OK);
    return fs.statSync(at).isDirectory();
  } catch {
    return false;
  }
}

const mustExist = (f: Flag<unknown>): boolean => f.kind === 'file' || f.kind === 'dir' || f.kind === 'path';

/** A value of its own syntax (LO,HI; P,N; ...): `what` describes it, `parse` checks it. */
export const custom = <T>(what: string, parse: (raw: string) => T | undefined, optionalValue = false): Flag<T> => ({ kind: 'custom', what, parse, optionalValue });

/** The one-line message for `raw` outside the domain of --name (raw undefined: no value given). */
function flagError(name: string, f: Flag<unknown>, raw: string | undefined): UsageError {
  if (mustExist(f) && raw) return new UsageError(`${raw}: ${f.what} not found (--${name})`);
  const what = mustExist(f) ? `the path of the ${f.what}` : f.what;
  return new UsageError(`--${name} ${f.kind === 'enum' ? 'must be' : 'expects'} ${what}, got ${raw === undefined ? 'no value' : `'${raw}'`}`);
}

/**
 * Reads `--name value`, `--name=value` and boolean `--name` against `table`; a value may start
 * with '-' (`--bias-bounds -0.5,0.5`), not with '--'. At most `positionals` bare arguments.
 * Every value is checked against its flag's domain; the first one outside it is a UsageError.
 */
export function parseFlags<S extends FlagTable>(cmd: string, argv: readonly string[], table: S, positionals = 0): { values: FlagValues<S>; positionals: string[] } {
  const values: Record<string, unknown> = {};
  const pos: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--') || a === '--') {
      if (pos.length === positionals) throw new UsageError(`unexpected argument '${a}' (see dsv3 ${cmd} --help)`);
      pos.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const f = Object.hasOwn(table, name) ? table[name]! : undefined;
    if (!f) throw new UsageError(`unknown argument '${a}' (see dsv3 ${cmd} --help)`);
    let raw: string | undefined = eq < 0 ? undefined : a.slice(eq + 1);
    if (f.kind === 'boolean') {
      if (raw !== undefined) throw new UsageError(`--${name} takes no value, got '${raw}'`);
      raw = '';
    } else if (raw === undefined) {
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith('--')) raw = argv[++i]!;
      else if (f.optionalValue) raw = '';
      else throw flagError(name, f, undefined);
    }
    const v = f.parse(raw);
    if (v === undefined) throw flagError(name, f, raw);
    const prev = values[name];
    values[name] = f.repeatable && Array.isArray(prev) && Array.isArray(v) ? [...(prev as unknown[]), ...v] : v;
  }
  return { values: values as FlagValues<S>, positionals: pos };
}

/** The value of a required flag. */
export function required<V extends object, K extends keyof V & string>(values: V, name: K): NonNullable<V[K]> {
  const v = values[name];
  if (v === undefined || v === null) throw new UsageError(`--${name} is required`);
  return v;
}

/** The training precisions of `--precision` (dsv3 train, bench train; model/precision-mode.ts). */
export const PRECISION_VALUES = ['fp32', 'bf16', 'fp8'] as const;
export type PrecisionFlag = (typeof PRECISION_VALUES)[number];
export const precision = (): Flag<PrecisionFlag> => oneOf(PRECISION_VALUES);

/**
 * The precision of `--precision P` and its alias `--fp8` (= `--precision fp8`); fp32 when neither
 * is given. `--fp8` with another `--precision` is a UsageError naming both.
 */
export function resolvePrecision(values: { precision?: PrecisionFlag; fp8?: true }): PrecisionFlag {
  if (values.fp8 && values.precision !== undefined && values.precision !== 'fp8') {
    throw new UsageError(`--fp8 (an alias of --precision fp8) contradicts --precision ${values.precision}`);
  }
  return values.precision ?? (values.fp8 ? 'fp8' : 'fp32');
}
