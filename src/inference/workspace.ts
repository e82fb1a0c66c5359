/**
 * Every buffer a forward step needs, allocated once per session for up to `rows` token rows
 * (batch x tokens per step) and reused by every layer and every step: decoding allocates
 * nothing. Row-major [rows, width] Float32Arrays, sized from the model config.
 */
import type { AttentionParams } from '../engine/kernels.js';
import type { ModelConfig } from '../model/config.js';
import { maxIntermediate } from './plan.js';

export class Workspace {
  readonly rows: number;
  /** Residual stream h [rows, D]. */
  readonly h: Float32Array;
  /** RMSNorm output feeding attention / FFN [rows, D]. */
  readonly xn: Float32Array;
  /** Final-norm hidden state [rows, D] (input of the LM head and of the MTP module's hnorm). */
  readonly hidden: Float32Array;
  /** c^Q before / after q_a_layernorm [rows, q_lora_rank]. */
  readonly qa: Float32Array;
  readonly qan: Float32Array;
  /** Per-head query [rows, H, dn + dr]. */
  readonly q: Float32Array;
  /** kv_a_proj output [rows, r + dr]; its latent part [rows, r] before / after the norm. */
  readonly kv: Float32Array;
  readonly c: Float32Array;
  readonly cn: Float32Array;
  /** Absorbed query [rows, H, r + dr] = [q_lat ; rope(q^R)] per head. */
  readonly qcat: Float32Array;
  /** Attention output in latent space [rows, H, r] and after W^UV [rows, H, dv]. */
  readonly ctx: Float32Array;
  readonly o: Float32Array;
  readonly rstd: Float32Array;
  readonly lse: Float32Array;
  /** SwiGLU gate / up / activation [rows, I_max]. */
  readonly g: Float32Array;
  readonly u: Float32Array;
  readonly act: Float32Array;
  /** Rows gathered for one expert [rows, D] and its output [rows, D]. */
  readonly xs: Float32Array;
  readonly ys: Float32Array;
  // ---- one decode row through the MoE: the K chosen experts (+ shared) as batched GEMVs ------
  /** gate/up outputs of expert slot j at rowGu[2j], rowGu[2j+1]; activations rowAct[j]; routed outputs rowY[j]. */
  readonly rowGu: Float32Array[];
  readonly rowAct: Float32Array[];
  readonly rowY: Float32Array[];
  /** (m, n, k) triples and operand lists for kernels().gemmBatch, filled per token (no allocation). */
  readonly rowDimsGu: Int32Array;
  readonly rowDimsDown: Int32Array;
  readonly rowA: Float32Array[];
  readonly rowB: Float32Array[];
  readonly rowC: Float32Array[];
  // ---- several rows through the MoE: every routed (row, expert) pair, grouped by expert --------
  /** Rows gathered per expert [rows*K, D], gate/up/activation [rows*K, I], routed outputs [rows*K, D]. */
  readonly xg: Float32Array;
  readonly gg: Float32Array;
  readonly ug: Float32Array;
  readonly ag: Float32Array;
  readonly yg: Float32Array;
  /** Views of xg/gg/ug/ag/yg starting at pair q (preallocated: the batched path allocates nothing). */
  readonly xgAt: Float32Array[];
  readonly ggAt: Float32Array[];
  readonly ugAt: Float32Array[];
  readonly agAt: Float32Array[];
  readonly ygAt: Float32Array[];
  /** (m, n, k) triples and operand lists for the experts' gemmBatch calls (up to 2 per expert). */
  readonly grpDims: Int32Array;
  /** grpDimsAt[g] = the first g triples of grpDims. */
  readonly grpDimsAt: Int32Array[];
  readonly grpA: Float32Array[];
  readonly grpB: Float32Array[];
  readonly grpC: Float32Array[];
  // ---- routing -------------------------------------------------------------------------------
  readonly rlogits: Float32Array;
  readonly scores: Float32Array;
  /** [rows, K] chosen experts and gate weights. */
  readonly topIdx: Int32Array;
  readonly topW: Float32Array;
  /** Dispatch: per expert its rows (token order) in byExpert[offsets[e] .. offsets[e+1]). */
  readonly offsets: Int32Array;
  /** offsets followed by the end of the shared expert's rows (one more group, after the routed pairs). */
  readonly offsetsShared: Int32Array;
  readonly fill: Int32Array;
  readonly byExpertRow: Int32Array;
  readonly byExpertSlot: Int32Array;
  // ---- MTP -----------------------------------------------------------------------------------
  /** [enorm(emb(t_{i+1})) ; hnorm(h_i)] [rows, 2D], and h_i copied from the main model [rows, D]. */
  readonly cat: Float32Array;
  readonly hPrev: Float32Array;
  // ---- head ----------------------------------------------------------------------------------
  readonly logitRows: number;
  /** Hidden rows gathered for the LM head [logitRows, D] and their logits [logitRows, V]. */
  readonly headIn: Float32Array;
  readonly logits: Float32Array;
  /** Per-head views (head h starts at q[h(dn+dr)], qcat[h(r+dr)], ctx[h r], o[h dv]); row stride is H x width. */
  readonly qHead: Float32Array[];
  readonly qcatHead: Float32Array[];
  readonly ctxHead: Float32Array[];
  readonly oHead: Float32Array[];
  /** logitView[n] = the first n rows of logits. */
  readonly logitView: Float32Array[];
  /** Attention kernel parameters, updated in place per call. */
  readonly attn: AttentionParams & { qStrides: [number, number, number]; kStrides: [number, number, number]; vStrides: [number, number, number]; oStrides: [number, number, number] };

  constructor(cfg: ModelConfig, rows: number, logitRows: number) {
    const D = cfg.hidden_size;
    const H = cfg.num_attention_heads;
    const r = cfg.kv_lora_rank;
    const dr = cfg.qk_rope_head_dim;
    const dn = cfg.qk_nope_head_dim;
    const dv = cfg.v_head_dim;
    const I = maxIntermediate(cfg);
    const E = cfg.n_routed_experts;
    const K = cfg.num_experts_per_tok;
    const f = (n: number): Float32Array => new Float32Array(rows * n);
    this.rows = rows;
    this.h = f(D);
    this.xn = f(D);
    this.hidden = f(D);
    this.qa = f(cfg.q_lora_rank ?? 0);
    this.qan = f(cfg.q_lora_rank ?? 0);
    this.q = f(H * (dn + dr));
    this.kv = f(r + dr);
    this.c = f(r);
    this.cn = f(r);
    this.qcat = f(H * (r + dr));
    this.ctx = f(H * r);
    this.o = f(H * dv);
    this.rstd = f(1);
    this.lse = f(H);
    this.g = f(I);
    this.u = f(I);
    this.act = f(I);
    this.xs = f(D);
    this.ys = f(D);
    const slots = K + 1;
    const view = (buf: Float32Array, n: number, j: number): Float32Array => buf.subarray(j * n, (j + 1) * n);
    const gu = new Float32Array(2 * slots * I);
    const act = new Float32Array(slots * I);
    const ys = new Float32Array(K * D);
    this.rowGu = Array.from({ length: 2 * slots }, (_, j) => view(gu, I, j));
    this.rowAct = Array.from({ length: slots }, (_, j) => view(act, I, j));
    this.rowY = Array.from({ length: K }, (_, j) => view(ys, D, j));
    this.rowDimsGu = new Int32Array(3 * 2 * slots);
    this.rowDimsDown = new Int32Array(3 * K);
    this.rowA = new Array<Float32Array>(2 * slots).fill(gu);
    this.rowB = new Array<Float32Array>(2 * slots).fill(gu);
    this.rowC = new Array<Float32Array>(2 * slots).fill(gu);
    const pairs = rows * K;
    const Ie = cfg.moe_intermediate_size;
    // (+ rows: the shared expert's rows after the routed pairs, kernels().moeRows path)
    this.xg = new Float32Array((pairs + rows) * D);
    this.gg = new Float32Array((pairs + rows) * Ie);
    this.ug = new Float32Array((pairs + rows) * Ie);
    this.ag = new Float32Array((pairs + rows) * Ie);
    this.yg = new Float32Array((pairs + rows) * D);
    const at = (buf: Float32Array, w: number): Float32Array[] => Array.from({ length: pairs }, (_, q) => buf.subarray(q * w));
    this.xgAt = at(this.xg, D);
    this.ggAt = at(this.gg, Ie);
    this.ugAt = at(this.ug, Ie);
    this.agAt = at(this.ag, Ie);
    this.ygAt = at(this.yg, D);
    this.grpDims = new Int32Array(3 * 2 * E);
    this.grpDimsAt = Array.from({ length: 2 * E + 1 }, (_, g) => this.grpDims.subarray(0, 3 * g));
    this.grpA = new Array<Float32Array>(2 * E).fill(this.xg);
    this.grpB = new Array<Float32Array>(2 * E).fill(this.xg);
    this.grpC = new Array<Float32Array>(2 * E).fill(this.xg);
    this.rlogits = f(E);
    this.scores = f(E);
    this.topIdx = new Int32Array(rows * K);
    this.topW = f(K);
    this.offsets = new Int32Array(E + 1);
    this.offsetsShared = new Int32Array(E + 2);
    this.fill = new Int32Array(E);
    this.byExpertRow = new Int32Array(rows * K);
    this.byExpertSlot = new Int32Array(rows * K);
    this.cat = f(2 * D);
    this.hPrev = f(D);
    this.logitRows = logitRows;
    this.headIn = new Float32Array(logitRows * D);
    this.logits = new Float32Array(logitRows * cfg.vocab_size);
    const heads = (buf: Float32Array, w: number): Float32Array[] => Array.from({ length: H }, (_, h) => buf.subarray(h * w));
    this.qHead = heads(this.q, dn + dr);
    this.qcatHead = heads(this.qcat, r + dr);
    this.ctxHead = heads(this.ctx, r);
    this.oHead = heads(this.o, dv);
    this.logitView = Array.from({ length: logitRows + 1 }, (_, n) => this.logits.subarray(0, n * cfg.vocab_size));
    this.attn = {
      batch: 1, heads: H, kvHeads: 1, tq: 1, tk: 1, dqk: r + dr, dv: r, scale: 1, causalOffset: 0, causalOffsets: null, kvBatch: null,
      qStrides: [0, 0, 0], kStrides: [0, 0, 0], vStrides: [0, 0, 0], oStrides: [0, 0, 0],
    };
  }

  /** Bytes held by the workspace buffers. */
  get bytes(): number {
    let n = 0;
    const seen = new Set<ArrayBufferLike>();
    for (const v of Object.values(this)) {
      if (ArrayBuffer.isView(v) && !seen.has(v.buffer)) {
        seen.add(v.buffer);
        n += v.buffer.byteLength;
      }
    }
    return n;
  }
}
