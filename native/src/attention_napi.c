/* Node-API bindings of flash attention (isa/attention.c):
 *   attention(p, q, k, v, out, lse)
 *   attentionBackward(p, q, k, v, out, lse, dout, dq, dk, dv)
 * and their BF16 twins attentionBf16 / attentionBackwardBf16 (isa/attention_bf16.c, same arguments)
 * with the JS signatures of the `Kernels` interface; p is the AttentionParams object, read
 * property by property here (the optional per-batch causalOffsets / kvBatch Int32Arrays too). Every buffer is checked against the extent its strides reach
 * (RangeError naming it) before any work. kvHeads must be 1 or heads. Strides must be
 * non-negative; the rows of out/dq/dk/dv must not overlap one another (dk and dv may be
 * views of one buffer: their gradients then sum, as in the reference). */
#include <stdlib.h>
#include <string.h>
#include "attention_bf16.h"
#include "cpu.h"
#include "fused_napi.h"
#include "gemm.h"

static int prop_value(napi_env env, napi_value obj, const char* key, napi_value* v) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) {
    char msg[128];
    snprintf(msg, sizeof msg, "dsv3 native: AttentionParams.%s is missing", key);
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  return napi_get_named_property(env, obj, key, v) == napi_ok ? 0 : -1;
}

static int prop_count(napi_env env, napi_value obj, const char* key, int64_t* out) {
  napi_value v;
  return prop_value(env, obj, key, &v) || fz_count(env, v, key, out);
}

static int prop_strides(napi_env env, napi_value obj, const char* key, int64_t out[3]) {
  napi_value arr, v;
  char name[48];
  if (prop_value(env, obj, key, &arr)) return -1;
  for (uint32_t i = 0; i < 3; i++) {
    snprintf(name, sizeof name, "%s[%u]", key, i);
    if (napi_get_element(env, arr, i, &v) != napi_ok || fz_count(env, v, name, &out[i])) return -1;
  }
  return 0;
}

static int read_params(napi_env env, napi_value p, dsv3_attn_ctx* c) {
  napi_value v;
  double scale, off;
  if (prop_count(env, p, "batch", &c->batch) || prop_count(env, p, "heads", &c->heads) ||
      prop_count(env, p, "kvHeads", &c->kv_heads) || prop_count(env, p, "tq", &c->tq) ||
      prop_count(env, p, "tk", &c->tk) || prop_count(env, p, "dqk", &c->dqk) || prop_count(env, p, "dv", &c->dv) ||
      prop_value(env, p, "scale", &v) || dsv3_double(env, v, &scale, "scale") ||
      prop_value(env, p, "causalOffset", &v) || dsv3_double(env, v, &off, "causalOffset") ||
      prop_strides(env, p, "qStrides", c->qs) || prop_strides(env, p, "kStrides", c->ks) ||
      prop_strides(env, p, "vStrides", c->vs) || prop_strides(env, p, "oStrides", c->os))
    return -1;
  /* token positions and causal limits are compared as float32 in the kernel: keep them exact */
  const int64_t lim = 1LL << 31, pos = 1LL << 23;
  if (c->batch >= lim || c->heads >= lim || c->dqk >= lim || c->dv >= lim || c->tq >= pos || c->tk >= 2 * pos ||
      off != floor(off) || fabs(off) >= (double)pos) {
    napi_throw_range_error(env, NULL,
                           "dsv3 native: attention: a size or causalOffset is out of range (tq, |causalOffset| < 2^23, tk < 2^24)");
    return -1;
  }
  if (c->heads > 0 && c->kv_heads != 1 && c->kv_heads != c->heads) {
    char msg[128];
    snprintf(msg, sizeof msg, "dsv3 native: attention: kvHeads must be 1 or heads (%lld), got %lld", (long long)c->heads,
             (long long)c->kv_heads);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  if (c->heads == 0) c->kv_heads = 1;
  c->group = c->heads / c->kv_heads;
  c->scale = (float)scale;
  c->causal_offset = (int64_t)off;
  return 0;
}

/* The optional per-batch arrays (continuous batching: each batch row a sequence at its own
 * position in its own cache slot): causalOffsets[b] replaces causalOffset for batch b;
 * kvBatch[b] is the k/v batch that batch b reads (forward only). Absent, undefined or null:
 * not used. *kv_batches receives the k/v batches the views must cover. */
static int optional_i32(napi_env env, napi_value p, const char* key, int64_t n, const int32_t** out) {
  bool has = false;
  napi_value v;
  napi_valuetype t;
  *out = NULL;
  if (napi_has_named_property(env, p, key, &has) != napi_ok || !has) return 0;
  if (napi_get_named_property(env, p, key, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_undefined || t == napi_null) return 0;
  void* data;
  char name[48];
  snprintf(name, sizeof name, "AttentionParams.%s", key);
  if (fz_typed(env, v, napi_int32_array, name, (size_t)n, &data)) return -1;
  *out = (const int32_t*)data;
  return 0;
}

static int read_rows(napi_env env, napi_value p, dsv3_attn_ctx* c, int backward, int64_t* kv_batches) {
  *kv_batches = c->batch;
  if (optional_i32(env, p, "causalOffsets", c->batch, &c->coffs) || optional_i32(env, p, "kvBatch", c->batch, &c->kvb)) return -1;
  if (c->coffs) {
    for (int64_t b = 0; b < c->batch; b++)
      if (c->coffs[b] <= -(1 << 23) || c->coffs[b] >= (1 << 23)) {
        napi_throw_range_error(env, NULL, "dsv3 native: attention: causalOffsets values must be in (-2^23, 2^23)");
        return -1;
      }
  }
  if (c->kvb) {
    if (backward) {
      napi_throw_range_error(env, NULL, "dsv3 native: attentionBackward: kvBatch is forward only");
      return -1;
    }
    int64_t mx = -1;
    for (int64_t b = 0; b < c->batch; b++) {
      if (c->kvb[b] < 0) {
        napi_throw_range_error(env, NULL, "dsv3 native: attention: kvBatch values must be >= 0");
        return -1;
      }
      if (c->kvb[b] > mx) mx = c->kvb[b];
    }
    *kv_batches = mx + 1;
  }
  return 0;
}

/* elements a [batch, tokens, heads, d] view with strides s reaches */
static double extent(const int64_t s[3], int64_t b, int64_t t, int64_t h, int64_t d) {
  if (b == 0 || t == 0 || h == 0 || d == 0) return 0;
  return (double)(b - 1) * s[0] + (double)(t - 1) * s[1] + (double)(h - 1) * s[2] + (double)d;
}

static int view_f32(napi_env env, napi_value v, const char* name, double need, float** out) {
  if (need > 9007199254740991.0) {
    napi_throw_range_error(env, NULL, "dsv3 native: attention: a view is too large");
    return -1;
  }
  return fz_f32(env, v, name, (size_t)need, out);
}

/* Plan: rows per chunk R, chunks, splits. Prefill/training: R = 32 rows (16 when d > 256),
 * which keeps the transposed Q tile in L1 and wastes little work on the causal diagonal
 * (a chunk only visits keys up to its last row). Decode-like calls (a chunk holds every query
 * row of a kv head): up to 64 rows, so all heads of MLA's absorbed form share one pass over
 * the key cache. */
static int plan(dsv3_attn_ctx* c, int backward, int* nthreads) {
  int64_t dmax = c->dqk > c->dv ? c->dqk : c->dv;
  if (dmax < 1) dmax = 1;
  const int64_t rows = c->tq * c->group;
  int64_t R;
  if (c->tq == 1 || rows <= 64) {
    R = dsv3_pad(rows < 1 ? 1 : rows > 64 ? 64 : rows);
  } else {
    R = dmax > 256 ? 16 : 32;
  }
  c->rows_per_chunk = R;
  c->chunks = (rows + R - 1) / R;
  const int64_t bg = c->batch * c->kv_heads;
  const double work = (double)c->batch * c->heads * c->tq * c->tk * (double)(c->dqk + c->dv);
  int th = dsv3_threads();
  if (work < 131072.0) th = 1; /* tiny: run on the calling thread */
  *nthreads = th;
  c->splits = 1;
  const int64_t nkb = (c->tk + DSV3_ATT_BK - 1) / DSV3_ATT_BK;
  const int64_t base = backward ? bg : bg * c->chunks;
  if (th > 1 && base > 0 && base < 2 * th) {
    int64_t sp = (backward ? 2 * th : 4 * th + base - 1) / base;
    const int64_t cap = backward ? nkb : (nkb + 1) / 2; /* forward: >= 2 key tiles per split */
    if (sp > cap) sp = cap;
    if (sp > 64) sp = 64;
    c->splits = sp < 1 ? 1 : sp;
  }
  return 0;
}

/* Per-thread floats of packed K/V rows (attention.c pack_rows) for tk keys, and for the
 * backward the packed dK/dV sums too; 0 (no packing) when that would pass 64 MiB a thread. */
static size_t pack_floats(const dsv3_attn_ctx* c, int backward) {
  const double n = (double)c->tk * (double)(dsv3_pad(c->dqk) + dsv3_pad(c->dv)) * (backward ? 2 : 1);
  return n * 4 > 64.0 * 1024 * 1024 ? 0 : (size_t)n;
}

typedef struct {
  void (*fn)(const dsv3_attn_ctx*, int, int);
  const dsv3_attn_ctx* c;
  int64_t tasks, group;
} attn_job;

/* pool task t runs kernel tasks [t*group, (t+1)*group) in order on one thread */
static void attn_task(void* ctx, int t, int thread) {
  const attn_job* j = (const attn_job*)ctx;
  const int64_t t1 = (t + 1) * j->group < j->tasks ? (t + 1) * j->group : j->tasks;
  for (int64_t u = t * j->group; u < t1; u++) j->fn(j->c, (int)u, thread);
}

/* Runs tasks [0, tasks) of fn. group > 1 hands them to the pool in runs of `group`
 * consecutive tasks, so that a task knows which one its thread does next (the forward
 * prefetches its rows). */
static void run(void (*fn)(const dsv3_attn_ctx*, int, int), const dsv3_attn_ctx* c, int64_t tasks, int nthreads,
                int64_t group) {
  if (group < 1) group = 1;
  attn_job j = {fn, c, tasks, group};
  if (nthreads <= 1) {
    for (int64_t t = 0; t < tasks; t++) fn(c, (int)t, 0);
  } else {
    dsv3_parallel_for((int)((tasks + group - 1) / group), attn_task, &j);
  }
}

static float* alloc_floats(napi_env env, size_t n) {
  void* p = NULL;
  if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0) {
    napi_throw_error(env, NULL, "dsv3 native: attention: out of memory");
    return NULL;
  }
  return (float*)p;
}

/* bf16: the BF16 kernel (isa/attention_bf16.c), VDPBF16PS where the CPU has it (and the GEMM's
 * test hook gemmAllowDpbf16 allows it) */
static napi_value attention_fwd(napi_env env, napi_callback_info info, int bf16) {
  GET_ARGS(env, info, 6);
  dsv3_attn_ctx c;
  memset(&c, 0, sizeof c);
  float *q, *k, *v, *out, *lse;
  int64_t kvn;
  if (read_params(env, argv[0], &c) || read_rows(env, argv[0], &c, 0, &kvn)) return NULL;
  if (view_f32(env, argv[1], "q", extent(c.qs, c.batch, c.tq, c.heads, c.dqk), &q) ||
      view_f32(env, argv[2], "k", extent(c.ks, kvn, c.tk, c.kv_heads, c.dqk), &k) ||
      view_f32(env, argv[3], "v", extent(c.vs, kvn, c.tk, c.kv_heads, c.dv), &v) ||
      view_f32(env, argv[4], "out", extent(c.os, c.batch, c.tq, c.heads, c.dv), &out) ||
      view_f32(env, argv[5], "lse", (double)c.batch * c.heads * c.tq, &lse))
    return NULL;
  if (c.batch == 0 || c.heads == 0 || c.tq == 0) return NULL;
  c.q = q, c.k = k, c.v = v, c.out = out, c.lse = lse;
  int th;
  plan(&c, 0, &th);
  c.scratch_floats = bf16 ? dsv3_attn_bf16_fwd_scratch(&c) : dsv3_attn_fwd_scratch(&c);
  c.dp = bf16 && dsv3_isa() == DSV3_ISA_LEVEL_AVX512 && dsv3_has_avx512_bf16() && dsv3_gemm_allow_dpbf16;
  const int64_t tasks = c.batch * c.kv_heads * c.chunks;
  /* Whole (batch, kv head)s per task, from packed K/V, when there are enough of them to keep
   * every thread busy (>= 4 a thread: they cost the same) and a chunk holds enough rows to
   * reuse a packed row (not decode: one query row reads each key once). */
  const int64_t bgs = c.batch * c.kv_heads;
  const size_t pk = pack_floats(&c, 0);
  const int by_bg = c.splits == 1 && (pk > 0 || bf16) && c.rows_per_chunk >= 16 && c.tq * c.group > 1 && bgs >= 4 * (int64_t)th;
  if (by_bg && !bf16) c.scratch_floats += pk + 64; /* (the bf16 scratch always has its packing room) */
  c.scratch = alloc_floats(env, c.scratch_floats * (size_t)th);
  if (!c.scratch) return NULL;
  if (c.splits > 1) {
    c.part = alloc_floats(env, (size_t)(tasks * c.splits) * dsv3_attn_fwd_part(&c));
    if (!c.part) {
      free(c.scratch);
      return NULL;
    }
  }
  if (bf16) {
    if (by_bg) run(SELECT_ISA(dsv3_attn_bf16_fwd_bg_task), &c, bgs, th, bgs / (8 * (int64_t)th));
    else run(SELECT_ISA(dsv3_attn_bf16_fwd_task), &c, tasks * c.splits, th, 1);
    if (c.splits > 1) run(SELECT_ISA(dsv3_attn_bf16_fwd_combine_task), &c, tasks, th, 1);
  } else {
    if (by_bg) run(SELECT_ISA(dsv3_attn_fwd_bg_task), &c, bgs, th, bgs / (8 * (int64_t)th)); /* >= 8 runs a thread */
    else run(SELECT_ISA(dsv3_attn_fwd_task), &c, tasks * c.splits, th, 1);
    if (c.splits > 1) run(SELECT_ISA(dsv3_attn_fwd_combine_task), &c, tasks, th, 1);
  }
  free(c.part);
  free(c.scratch);
  return NULL;
}

static napi_value js_attention(napi_env env, napi_callback_info info) { return attention_fwd(env, info, 0); }
static napi_value js_attention_bf16(napi_env env, napi_callback_info info) { return attention_fwd(env, info, 1); }

static napi_value attention_bwd(napi_env env, napi_callback_info info, int bf16) {
  GET_ARGS(env, info, 10);
  dsv3_attn_ctx c;
  memset(&c, 0, sizeof c);
  float *q, *k, *v, *o, *lse, *dout, *dq, *dk, *dv;
  int64_t kvn;
  if (read_params(env, argv[0], &c) || read_rows(env, argv[0], &c, 1, &kvn)) return NULL;
  const double nq = extent(c.qs, c.batch, c.tq, c.heads, c.dqk), nk = extent(c.ks, c.batch, c.tk, c.kv_heads, c.dqk);
  const double nv = extent(c.vs, c.batch, c.tk, c.kv_heads, c.dv), no = extent(c.os, c.batch, c.tq, c.heads, c.dv);
  if (view_f32(env, argv[1], "q", nq, &q) || view_f32(env, argv[2], "k", nk, &k) ||
      view_f32(env, argv[3], "v", nv, &v) || view_f32(env, argv[4], "out", no, &o) ||
      view_f32(env, argv[5], "lse", (double)c.batch * c.heads * c.tq, &lse) ||
      view_f32(env, argv[6], "dout", no, &dout) || view_f32(env, argv[7], "dq", nq, &dq) ||
      view_f32(env, argv[8], "dk", nk, &dk) || view_f32(env, argv[9], "dv", nv, &dv))
    return NULL;
  if (c.batch == 0 || c.heads == 0) return NULL; /* (tk 0 still zeroes dq; tq 0 still zeroes dk, dv) */
  c.q = q, c.k = k, c.v = v, c.o = o, c.lse_in = lse, c.dout = dout, c.dq = dq, c.dk = dk, c.dv_out = dv;
  int th;
  plan(&c, 1, &th);
  /* + room for packed K/V and dK/dV sums (attention.c: the task packs when it is there) */
  const size_t pk = pack_floats(&c, 1);
  c.scratch_floats = bf16 ? dsv3_attn_bf16_bwd_scratch(&c) : dsv3_attn_bwd_scratch(&c) + (pk > 0 ? pk + 64 : 0);
  c.dp = bf16 && dsv3_isa() == DSV3_ISA_LEVEL_AVX512 && dsv3_has_avx512_bf16() && dsv3_gemm_allow_dpbf16;
  const int64_t bg = c.batch * c.kv_heads;
  c.scratch = alloc_floats(env, c.scratch_floats * (size_t)th);
  if (!c.scratch) return NULL;
  if (c.splits > 1) {
    c.part = alloc_floats(env, (size_t)((c.splits - 1) * bg * c.tq * c.group * dsv3_pad(c.dqk)));
    if (!c.part) {
      free(c.scratch);
      return NULL;
    }
  }
  run(bf16 ? SELECT_ISA(dsv3_attn_bf16_bwd_task) : SELECT_ISA(dsv3_attn_bwd_task), &c, bg * c.splits, th,
      c.splits == 1 ? bg / (8 * (int64_t)th) : 1);
  if (c.splits > 1) run(SELECT_ISA(dsv3_attn_bwd_reduce_task), &c, bg, th, 1);
  free(c.part);
  free(c.scratch);
  return NULL;
}

static napi_value js_attention_bwd(napi_env env, napi_callback_info info) { return attention_bwd(env, info, 0); }
static napi_value js_attention_bwd_bf16(napi_env env, napi_callback_info info) { return attention_bwd(env, info, 1); }

void dsv3_register_attention(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "attention", js_attention);
  dsv3_export(env, exports, "attentionBackward", js_attention_bwd);
  dsv3_export(env, exports, "attentionBf16", js_attention_bf16);
  dsv3_export(env, exports, "attentionBackwardBf16", js_attention_bwd_bf16);
}
