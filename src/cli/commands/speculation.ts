/**
 * The speculative-decoding flags shared by `dsv3 generate` and `dsv3 chat`: --speculative (on),
 * --no-speculative (off), and by default "auto" when the output is identical either way (greedy
 * without penalties on a checkpoint with MTP modules): the decoder measures the cost per token of
 * speculative rounds and of plain steps as it generates and runs the cheaper
 * (inference/speculation-policy.ts). --draft-depth N chains N drafts per round; past the
 * checkpoint's modules its last module drafts again on its own output (SpeculativeDecoder `chain`).
 */
import { UsageError } from '../command.js';
import { bool, draftDepth } from '../flags.js';
import { AdaptiveSpeculation, type AdaptiveSummary } from '../../inference/speculation-policy.js';
import { MAX_CHAIN_DEPTH } from '../../inference/speculative.js';
import { REPROBE_EVERY, rememberedPlain, verdictFile } from '../../inference/speculation-verdict.js';

export const SPECULATION_FLAGS = {
  speculative: bool(),
  'no-speculative': bool(),
  'draft-depth': draftDepth(),
};

export const SPECULATION_HELP = `  --speculative            MTP self-speculative decoding on every round: the MTP modules draft
                           the next tokens (chained: module k drafts token k+1 from module k-1's
                           hidden state and the draft before), the main model verifies them all
                           in one forward and keeps the longest matching prefix. Greedy: the
                           same tokens as plain decoding. Sampling or penalties: exact
                           speculative (rejection) sampling, the same distribution of texts but
                           other draws for a seed than --no-speculative
  --no-speculative         plain decoding, one main forward per token
                           Default (auto), when the checkpoint has an MTP module and decoding is
                           greedy without penalties (--temperature 0), i.e. when the output is
                           identical either way: the first rounds measure the CPU time per token
                           of speculative rounds and of plain steps, the cheaper one runs, and
                           the other is re-measured now and then (after 64 tokens, then 128, ..
                           up to 512). Speculation pays where verifying several tokens costs
                           little more than one (large, memory-bound models); on dsv3 train's
                           small default it costs ~1.2-1.5x per token: there a round costs more
                           than the tokens it could yield with every draft accepted, and after
                           that first measurement (~10-20 tokens) speculation stops for the run (a
                           chat: for the session), and later runs on the same checkpoint and
                           machine start plain (the verdict is kept in the OS cache directory,
                           dsv3/speculation; one run in ${REPROBE_EVERY} measures again;
                           DSV3_SPECULATION_CACHE=DIR elsewhere, =off not at all). Otherwise: off
  --draft-depth N          drafts per round (1 .. ${MAX_CHAIN_DEPTH}; default: the checkpoint's MTP modules);
                           past the checkpoint's modules its last module drafts again on its own
                           output (chained drafts, as vLLM / SGLang run DeepSeek-V3's one module)
`;

export type SpeculationMode = 'on' | 'off' | 'auto';

export interface SpeculationChoice {
  mode: SpeculationMode;
  /** Drafts per round, and whether they chain the last module past the checkpoint's modules. */
  depth: number;
  chain: boolean;
}

/** The mode and draft depth from the flags, for a checkpoint with `modules` MTP modules at `dir`;
 * `exact`: greedy without penalties (the output does not depend on speculation). */
export function speculationChoice(
  v: { speculative?: true; 'no-speculative'?: true; 'draft-depth'?: number },
  modules: number,
  dir: string,
  exact: boolean,
): SpeculationChoice {
  if (v.speculative && v['no-speculative']) throw new UsageError('--speculative and --no-speculative exclude each other');
  if (v.speculative && modules < 1) throw new UsageError(`--speculative: ${dir} has no MTP module (num_nextn_predict_layers is 0)`);
  const flag = v['draft-depth'];
  if (flag !== undefined && v['no-speculative']) throw new UsageError('--draft-depth needs speculative decoding; it excludes --no-speculative');
  if (flag !== undefined && modules < 1) throw new UsageError(`--draft-depth ${flag}: ${dir} has no MTP module (num_nextn_predict_layers is 0)`);
  const mode: SpeculationMode = v.speculative ? 'on' : !v['no-speculative'] && exact && modules >= 1 ? 'auto' : 'off';
  const depth = flag ?? Math.max(1, modules);
  return { mode, depth, chain: depth > modules };
}

/** The policy of a mode: an AdaptiveSpeculation for 'auto' (kept for a chat's every turn);
 * `remembered`: it starts retired (an earlier run's verdict, speculation-verdict.ts). */
export function speculationPolicy(mode: SpeculationMode, remembered = false): AdaptiveSpeculation | null {
  return mode === 'auto' ? new AdaptiveSpeculation({ remembered }) : null;
}

/** Auto's remembered verdict for checkpoint `dir` (speculation-verdict.ts): its file (null: not
 * auto, or DSV3_SPECULATION_CACHE=off) and whether it says to start plain. */
export function autoVerdict(choice: SpeculationChoice, dir: string): { file: string | null; plain: boolean } {
  const file = choice.mode === 'auto' ? verdictFile(dir, choice.depth, choice.chain) : null;
  return { file, plain: rememberedPlain(file) };
}

/** --json's `auto` object. */
export function autoJson(s: AdaptiveSummary): Record<string, unknown> {
  const ms = (x: number): number | null => (Number.isFinite(x) ? Number(x.toFixed(4)) : null);
  return {
    decision: s.decision === 'speculate' ? 'speculative' : 'plain',
    probes: s.probes,
    switches: s.switches,
    speculative_tokens: s.speculativeTokens,
    plain_tokens: s.plainTokens,
    speculative_cpu_ms_per_token: ms(s.speculativeMsPerToken),
    plain_cpu_ms_per_token: ms(s.plainMsPerToken),
    catch_up_cpu_ms: ms(s.catchUpMs),
    retired: s.retired,
    retired_by: s.retiredBy,
  };
}

const RETIRED_WHY = {
  losing: 'it lost the last probes and keeping the MTP modules current costs more than its budget',
  bound: 'a speculative round costs more than the tokens it could yield with every draft accepted',
  remembered: 'an earlier run on this checkpoint and machine found that a speculative round costs more than the tokens it could yield with every draft accepted (remembered in the OS cache directory; DSV3_SPECULATION_CACHE=off ignores it)',
} as const;

/** --verbose's words for the auto decision. */
export function autoText(s: AdaptiveSummary): string {
  const f = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : '?');
  return `auto: ${s.decision === 'speculate' ? 'speculative' : 'plain'} decoding chosen (CPU ms per token: speculative ${f(s.speculativeMsPerToken)}, plain ${f(s.plainMsPerToken)}; ${s.speculativeTokens} tokens speculative, ${s.plainTokens} plain, ${s.switches} switches${s.retired ? `; speculation retired: ${RETIRED_WHY[s.retiredBy ?? 'losing']}` : ''})`;
}

/** ", by depth 1: 80.0%, 2: 55.0%" (acceptance per draft depth) when there are several. */
export function depthText(byDepth: readonly number[]): string {
  return byDepth.length > 1 ? ` (by depth ${byDepth.map((a, k) => `${k + 1}: ${(a * 100).toFixed(1)}%`).join(', ')})` : '';
}
