/** A CLI command: every command has a one-line summary and a --help text. */
export interface Command {
  name: string;
  summary: string;
  /** Full help text printed by `dsv3 <name> --help` (usage line first). */
  help: string;
  run(argv: string[]): Promise<number | void>;
}

/** A benchmark of `dsv3 bench` (src/cli/bench/): prints JSON lines on stdout (and a readable
 * table on stderr unless --json). */
export interface Bench {
  name: string;
  summary: string;
  help: string;
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

/** Parses a numeric flag value, naming the flag when it is not a finite number. */
export function numberFlag(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const x = Number(value);
  if (!Number.isFinite(x)) throw new UsageError(`--${name} expects a number, got '${value}'`);
  return x;
}

/** Parses an integer flag value (>= min). */
export function intFlag(name: string, value: string | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const x = Number(value);
  if (!Number.isInteger(x) || x < min) throw new UsageError(`--${name} expects an integer >= ${min}, got '${value}'`);
  return x;
}
