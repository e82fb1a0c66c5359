/**
 * Exact time arithmetic for the pipeline simulator (docs/DUALPIPE.md §8, fixtures README
 * "Simulator output": all inputs are multiples of 1/4 and results must match exactly).
 *
 * Every input duration is mapped to an integer number of ticks of one common grid 1/den, with
 * den the smallest integer for which all inputs are whole ticks. The simulation then only adds,
 * subtracts and compares safe integers, and a result converts back as ticks / den, which is the
 * exact value for dyadic grids (den = 1, 2, 4, ...) and the correctly rounded decimal otherwise.
 */
import { DsvError } from '../errors.js';

/** Largest grid denominator tried; inputs that need a finer grid are rejected. */
const MAX_DENOMINATOR = 1 << 16;

export class TimeGrid {
  /** ticks per time unit */
  readonly den: number;

  /** Build the coarsest grid on which every value (finite, >= 0) is a whole number of ticks. */
  constructor(values: Record<string, number>) {
    for (const [name, v] of Object.entries(values)) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
        throw new DsvError(`pipeline simulator: time ${name} must be a finite number >= 0, got ${String(v)}`);
      }
    }
    const xs = Object.values(values);
    for (let den = 1; den <= MAX_DENOMINATOR; den++) {
      if (xs.every((x) => Number.isSafeInteger(x * den))) {
        this.den = den;
        return;
      }
    }
    throw new DsvError(
      `pipeline simulator: times ${JSON.stringify(values)} are not multiples of a common 1/n with n <= ${MAX_DENOMINATOR}; ` +
        'use exact fractions such as multiples of 1/4',
    );
  }

  /** A value of the grid, as ticks (exact integer). */
  ticks(x: number): number {
    const t = x * this.den;
    if (!Number.isSafeInteger(t)) throw new DsvError(`pipeline simulator: ${x} is not on the 1/${this.den} time grid`);
    return t;
  }

  /** Ticks back to time units. */
  time(t: number): number {
    return t / this.den;
  }
}
