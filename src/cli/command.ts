/** A CLI command: every command has a one-line summary, a --help text and its flag table. */
export interface Command {
  name: string;
  summary: string;
  /** Full help text printed by `dsv3 <name> --help` (usage line first). */
  help: string;
  /** Every flag with its domain (flags.ts); test/cli-fuzz.test.ts feeds each one bad values. */
  flags: FlagTable;
  run(argv: string[]): Promise<number | void>;
}

/** A benchmark of `dsv3 bench` (src/cli/bench/): prints JSON lines on stdout (and a readable
 * table on stderr unless --json). */
export interface Bench {
  name: string;
  summary: string;
  help: string;
  /** Every flag with its domain (flags.ts), as Command.flags. */
  flags: FlagTable;
  run(argv: string[]): Promise<void>;
}

/** An error whose message is meant for the user as is (no stack trace). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** True when argv asks for help. */
export function wantsHelp(argv: string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

/** Bounds of a numeric flag (open: the bound itself is excluded). */
export interface NumberRange {
  int: boolean;
  min: number;
  minOpen: boolean;
  max: number;
  maxOpen: boolean;
}

/** A flag's domain (built by the helpers of flags.ts). */
export interface Flag<T> {
  /** boolean: takes no value; file, dir, path (either): must exist; out-*: a path to write. */
  readonly kind: 'boolean' | 'number' | 'enum' | 'text' | 'file' | 'dir' | 'path' | 'out-file' | 'out-dir' | 'custom';
  /** What the flag accepts, in words: "a number > 0", "f32 or bf16", "input file". */
  readonly what: string;
  /** The value of `raw`, or undefined when `raw` lies outside the domain. */
  parse(raw: string): T | undefined;
  readonly range?: NumberRange;
  readonly values?: readonly string[];
  /** `--flag` with no value is allowed and reads as '' (train --resume). */
  readonly optionalValue?: boolean;
  /** May be given several times: the values (arrays) are concatenated (generate --stop). */
  readonly repeatable?: boolean;
}

export type FlagTable = Readonly<Record<string, Flag<unknown>>>;
