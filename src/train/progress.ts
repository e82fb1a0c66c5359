/**
 * The progress line of `dsv3 train` on stderr: step, LM loss ("loss"), MTP cross-entropy, lr,
 * tokens/s, MaxVio, ETA, and last the total L_Main + λ·L_MTP + α·L_Bal that is minimised.
 * On a terminal it redraws one line; otherwise it prints a line every `every` steps.
 */

export interface ProgressFields {
  step: number;
  steps: number;
  /** L_Main, the next-token cross-entropy. */
  lm: number;
  /** Mean cross-entropy of the MTP depths (unweighted). */
  mtp: number;
  /** L_Main + λ·L_MTP + α·L_Bal. */
  total: number;
  tokensPerS: number;
  maxVio: number;
  lr: number;
  /** Seconds per step (smoothed) for the ETA. */
  secPerStep: number;
}

export function fmtDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  const s = Math.round(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

export function progressLine(f: ProgressFields): string {
  const width = 20;
  const frac = f.steps > 0 ? Math.min(1, f.step / f.steps) : 1;
  const filled = Math.round(frac * width);
  const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
  const eta = fmtDuration((f.steps - f.step) * f.secPerStep);
  return (
    `[${bar}] step ${f.step}/${f.steps} loss ${f.lm.toFixed(4)} mtp ${Number.isFinite(f.mtp) ? f.mtp.toFixed(4) : '-'} ` +
    `lr ${f.lr.toExponential(2)} ${Math.round(f.tokensPerS)} tok/s maxvio ${f.maxVio.toFixed(3)} eta ${eta} total ${f.total.toFixed(4)}`
  );
}

export class Progress {
  private readonly tty: boolean;
  private lastLen = 0;

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr,
    private readonly every = 10,
    private readonly quiet = false,
  ) {
    this.tty = Boolean(out.isTTY);
  }

  update(f: ProgressFields): void {
    if (this.quiet) return;
    const line = progressLine(f);
    if (this.tty) {
      this.out.write('\r' + line + ' '.repeat(Math.max(0, this.lastLen - line.length)));
      this.lastLen = line.length;
    } else if (f.step % this.every === 0 || f.step === f.steps || f.step === 1) {
      this.out.write(line + '\n');
    }
  }

  /** Prints a message on its own line (keeping the progress line intact on a terminal). */
  log(msg: string): void {
    if (this.quiet) return;
    if (this.tty && this.lastLen > 0) {
      this.out.write('\n');
      this.lastLen = 0;
    }
    this.out.write(msg + '\n');
  }

  done(): void {
    if (this.tty && this.lastLen > 0 && !this.quiet) this.out.write('\n');
    this.lastLen = 0;
  }
}
