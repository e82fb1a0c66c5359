/**
 * `dsv3 experiment routing-sim`: the study notes' NumPy demonstration of auxiliary-loss-free
 * routing (../shared/seed/deepseek-v3-report-notes.txt, `demo_training_loop`), in TypeScript and
 * without training: N = 256 experts, top-8, 1,024 tokens per step, router logits N(0, 1) plus a
 * linear trend from −1 to 1 across the experts, gate softmax(e + b), after each step
 * b ← clip(b + γ·(1/N − share), −2, 2) with γ = 0.02, 200 steps; H(share) and max_share every
 * 40 steps and the final bias mean/std, as the notes print them. The verdicts compare means over
 * the first and the last tenth of the steps (one step's max_share is noisy).
 *
 * Beside it, on the same logits (one seeded stream per seed), the paper's rule (§2.1.2, eq. 16):
 * sigmoid affinities s = σ(e), the bias only in the selection (top-K of s + b; the gates come
 * from s), b ← b + γ·sign(mean load − load) with the paper's γ = 0.001; and, as the floor of what
 * "balanced" can mean with 1,024 × 8 random slots, the same logits without the trend or a bias.
 */
import { deriveSeed, Rng } from '../data/rng.js';
import { PAPER } from '../train/recipe.js';
import { escapeXml, fmtNum, heatmap } from '../train/svg.js';
import { runsOf, finalsOf, type Arm, type Experiment, type Measured, type RunContext, type RunRecord } from './experiment.js';

type Rule = 'notes' | 'paper' | 'balanced';

export interface RoutingSimOptions {
  experts: number;
  topK: number;
  tokens: number;
  steps: number;
  /** The notes' γ (proportional rule) and clip, the paper's γ (sign rule). */
  gammaNotes: number;
  clip: number;
  gammaPaper: number;
  /** Columns of the share heatmap. */
  heatCols: number;
}

export const ROUTING_SIM: RoutingSimOptions = { experts: 256, topK: 8, tokens: 1024, steps: 200, gammaNotes: 0.02, clip: 2, gammaPaper: PAPER.biasGamma, heatCols: 50 };

const entropy = (share: Float64Array): number => {
  let h = 0;
  for (const p of share) h -= p * Math.log(p + 1e-12); // as the notes: −Σ p·log(p + 1e-12)
  return h;
};

/** One (rule, seed) simulation; the logits depend on the seed only, so every rule sees the same ones. */
export function simulateRouting(rule: Rule, seed: number, o: RoutingSimOptions, tick: (step: number) => void = () => {}): Measured {
  const { experts: N, topK: K, tokens: T, steps } = o;
  const rng = new Rng(deriveSeed(seed, 'routing-sim'));
  // Box-Muller, both outputs of each pair used (half the uniforms and logarithms of Rng.nextNormal)
  let spare = NaN;
  const normal = (): number => {
    if (!Number.isNaN(spare)) {
      const z = spare;
      spare = NaN;
      return z;
    }
    const r = Math.sqrt(-2 * Math.log(1 - rng.nextFloat()));
    const a = 2 * Math.PI * rng.nextFloat();
    spare = r * Math.sin(a);
    return r * Math.cos(a);
  };
  const trend = Float64Array.from({ length: N }, (_, i) => (rule === 'balanced' ? 0 : -1 + (2 * i) / (N - 1)));
  const bias = new Float64Array(N);
  const usage = new Float64Array(N);
  const share = new Float64Array(N);
  const score = new Float64Array(N);
  const topV = new Float64Array(K);
  const topI = new Int32Array(K);
  const H: number[] = [];
  const maxShare: number[] = [];
  const biasStd: number[] = [];
  const every = Math.max(1, Math.ceil(steps / o.heatCols));
  const heat: number[][] = Array.from({ length: N }, () => []);
  const heatSteps: number[] = [];
  const printed: Array<{ step: number; entropy: number; max_share: number }> = [];
  for (let step = 0; step < steps; step++) {
    usage.fill(0);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < N; i++) {
        const e = normal() + trend[i]!;
        score[i] = rule === 'paper' ? 1 / (1 + Math.exp(-e)) + bias[i]! : e + bias[i]!; // softmax is monotone: top-K of g = top-K of e + b
      }
      // top-K by insertion into a sorted (descending) list of K
      topV.fill(-Infinity);
      for (let i = 0; i < N; i++) {
        const v = score[i]!;
        if (v <= topV[K - 1]!) continue;
        let j = K - 1;
        while (j > 0 && topV[j - 1]! < v) {
          topV[j] = topV[j - 1]!;
          topI[j] = topI[j - 1]!;
          j--;
        }
        topV[j] = v;
        topI[j] = i;
      }
      for (let k = 0; k < K; k++) usage[topI[k]!]!++;
    }
    let mx = 0;
    for (let i = 0; i < N; i++) mx = Math.max(mx, (share[i] = usage[i]! / (T * K)));
    H.push(entropy(share));
    maxShare.push(mx);
    if (step % 40 === 0 || step === steps - 1) printed.push({ step, entropy: H[step]!, max_share: mx });
    if (step % every === 0) {
      heatSteps.push(step);
      for (let i = 0; i < N; i++) heat[i]!.push(Number((share[i]! * N).toPrecision(4)));
    }
    if (rule === 'notes') {
      for (let i = 0; i < N; i++) bias[i] = Math.min(o.clip, Math.max(-o.clip, bias[i]! + o.gammaNotes * (1 / N - share[i]!)));
    } else if (rule === 'paper') {
      const mean = (T * K) / N;
      for (let i = 0; i < N; i++) bias[i] = bias[i]! + o.gammaPaper * Math.sign(mean - usage[i]!);
    }
    const bm = bias.reduce((a, b) => a + b, 0) / N;
    biasStd.push(Math.sqrt(bias.reduce((a, b) => a + (b - bm) ** 2, 0) / N));
    tick(step + 1);
  }
  const tail = Math.max(1, Math.round(steps / 10));
  const avg = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const bm = bias.reduce((a, b) => a + b, 0) / N;
  const xs = H.map((_, i) => i);
  return {
    finals: {
      max_share_start: avg(maxShare.slice(0, tail)),
      max_share_end: avg(maxShare.slice(-tail)),
      max_share_last: maxShare[steps - 1]!,
      entropy_start: avg(H.slice(0, tail)),
      entropy_end: avg(H.slice(-tail)),
      bias_mean: bm,
      bias_std: biasStd[steps - 1]!,
    },
    curves: { max_share: { x: xs, y: maxShare }, entropy: { x: xs, y: H }, bias_std: { x: xs, y: biasStd } },
    extra: { printed, heat_steps: heatSteps, heat },
  };
}

const RULES: Array<{ rule: Rule; label: string }> = [
  { rule: 'notes', label: "study notes: softmax(e + b), b += γ(1/N − share), γ 0.02, clip ±2" },
  { rule: 'paper', label: `paper: top-K of σ(e) + b, b += γ·sign(mean − load), γ ${PAPER.biasGamma}` },
  { rule: 'balanced', label: 'balanced floor: no trend, no bias' },
];

function claimsFor(runs: readonly RunRecord[], o: { experts: number }): ReturnType<Experiment['claims']> {
  const N = o.experts;
  const out: ReturnType<Experiment['claims']> = [];
  for (const r of ['notes', 'paper'] as const) {
    const who = r === 'notes' ? "the study notes' schematic rule" : "the paper's sign rule";
    out.push({
      paper: `The notes (and §2.1.2, eq. 16): updating the per-expert bias from the load lowers the most-loaded expert's share (${who}).`,
      a: { label: `${r}: max_share over the last tenth of steps`, values: finalsOf(runs, r, 'max_share_end') },
      b: { label: `${r}: max_share over the first tenth`, values: finalsOf(runs, r, 'max_share_start') },
      direction: 'lower',
    });
    out.push({
      paper: `The notes: "selection shares spread toward the target ≈ 1/N" = ${(1 / N).toFixed(4)} (entropy → log N = ${Math.log(N).toFixed(3)}); here: ${who} ends with max_share at most 10% above that of balanced routing (no trend, no bias).`,
      a: { label: `${r}: max_share over the last tenth of steps`, values: finalsOf(runs, r, 'max_share_end') },
      b: { label: 'balanced floor', values: finalsOf(runs, 'balanced', 'max_share_end') },
      direction: 'lower',
      margin: 0.1,
    });
  }
  return out;
}

function extraHtml(runs: readonly RunRecord[], arms: readonly Arm[]): string {
  const parts: string[] = ['<h2>As the notes print it (seed 0): H(share) and max_share every 40 steps, final bias</h2><div class="row">'];
  for (const a of arms) {
    const r = runsOf(runs, a.name)[0];
    if (!r) continue;
    const printed = (r.extra?.['printed'] ?? []) as Array<{ step: number; entropy: number; max_share: number }>;
    const rows = printed.map((p) => `<tr><td>${p.step}</td><td>${p.entropy.toFixed(3)}</td><td>${p.max_share.toFixed(4)}</td></tr>`).join('');
    parts.push(`<table><tr><th colspan="3">${escapeXml(a.label)}</th></tr><tr><th>step</th><th>H(share)</th><th>max_share</th></tr>${rows}` +
      `<tr><td colspan="3">final bias mean ${fmtNum(r.finals['bias_mean']!)}, std ${fmtNum(r.finals['bias_std']!)}</td></tr></table>`);
  }
  parts.push('</div><h2>Share per expert over steps (seed 0; share × N: 1 = uniform)</h2><div class="row">');
  for (const a of arms) {
    const r = runsOf(runs, a.name)[0];
    const heat = r?.extra?.['heat'] as number[][] | undefined;
    const steps = r?.extra?.['heat_steps'] as number[] | undefined;
    if (!heat || !steps) continue;
    parts.push(heatmap({
      title: a.label,
      values: heat,
      rowLabel: (e) => `expert ${e}`,
      colLabel: (c) => `step ${steps[c]}`,
      center: 1,
      halfRange: 1,
      cellHeight: 1,
      width: 440,
      legend: 'rows: experts 0 (trend −1) … 255 (trend +1); red ≥ 2× uniform, blue 0',
    }));
  }
  parts.push('</div>');
  return parts.join('');
}

export const routingSim: Experiment = {
  name: 'routing-sim',
  summary: "the study notes' aux-loss-free routing demo vs the paper's rule (no training, seconds)",
  source: 'DeepSeek-V3 report §2.1.2 (eq. 16) and the study notes\' NumPy demo (demo_training_loop): 256 experts, top-8, 1,024 tokens per step, logits N(0,1) + a linear trend −1..1, 200 steps.',
  plan(size) {
    const o: RoutingSimOptions = { ...ROUTING_SIM, ...(size.quick ? { tokens: 128, steps: 40 } : {}), ...(size.steps !== undefined ? { steps: size.steps } : {}) };
    return {
      arms: RULES.map((r) => ({ name: r.rule, label: r.label, settings: { rule: r.rule } })),
      steps: o.steps,
      settings: { ...o },
      run: (arm, ctx: RunContext) => simulateRouting(arm.settings['rule'] as Rule, ctx.seed, o, ctx.tick),
    };
  },
  metrics: {
    max_share_start: 'max_share, first tenth',
    max_share_end: 'max_share, last tenth',
    entropy_start: 'H(share), first tenth',
    entropy_end: 'H(share), last tenth',
    bias_mean: 'final bias mean',
    bias_std: 'final bias std',
  },
  curves: {
    max_share: { title: 'max_share (share of the most-loaded expert)', yLabel: 'share of top-K slots' },
    entropy: { title: 'H(share)', yLabel: 'nats' },
    bias_std: { title: 'bias std across experts', yLabel: 'std(b)' },
  },
  claims: (runs, arms) => claimsFor(runs, { experts: (arms.length && (runs[0]?.settings['experts'] as number)) || ROUTING_SIM.experts }),
  extraHtml,
};
