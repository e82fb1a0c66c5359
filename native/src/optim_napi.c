/* Node-API bindings of the optimizer kernels (isa/optim.c), with the JS signatures of the
 * `Kernels` interface (src/engine/kernels.ts):
 *   adamw(w, g, m, v, n, gradScale, decay, b1, b2, c1, c2, lr, bc1, bc2, eps[, wb])
 *   adamwBf16(w, g, m, v, n, gradScale, decay, b1, b2, c1, c2, lr, bc1, bc2, eps[, wb])  m, v: Uint16Array (bf16)
 * wb (optional Uint16Array, or undefined): also the bf16 bits of the updated w (dsv3_bf16_round),
 * written block by block right after each block's update while w is in L1: the step's bf16 copy
 * of the weight (src/engine/bf16-weights.ts) without a separate pass over w.
 *   sumSquares(x, n) -> number
 * Buffers shorter than n are a RangeError naming the argument. Large calls are split into
 * contiguous ranges on the thread pool (memory-bound: ranges of at least 64K elements). */
#include "bf16_convert.h"
#include "fused_napi.h"
#include "optim.h"

#define OP_TASK_MIN (1 << 16)
#define OP_MAX_TASKS 64
#define OP_WB_BLOCK 2048 /* elements updated, then rounded into wb, at a time (8 KB of w) */

typedef struct {
  int kind; /* 0 adamw, 1 sum of squares, 2 adamw with bf16 moments */
  float *w, *m, *v;
  uint16_t *mh, *vh;
  uint16_t* wb; /* adamw / adamwBf16: the bf16 bits of the new w, or NULL */
  const float* g;
  const dsv3_adamw_args* a;
  int64_t n, per;
  double part[OP_MAX_TASKS];
} op_job;

static void op_task(void* ctx, int t, int thread) {
  (void)thread;
  op_job* j = (op_job*)ctx;
  const int64_t s = (int64_t)t * j->per, e = s + j->per < j->n ? s + j->per : j->n;
  if (j->wb && j->kind != 1) {
    for (int64_t b = s; b < e; b += OP_WB_BLOCK) {
      const int64_t be = b + OP_WB_BLOCK < e ? b + OP_WB_BLOCK : e;
      if (j->kind == 0) SELECT_ISA(dsv3_adamw)(j->w, j->g, j->m, j->v, b, be, j->a);
      else SELECT_ISA(dsv3_adamw_bf16)(j->w, j->g, j->mh, j->vh, b, be, j->a);
      SELECT_ISA(dsv3_bf16_round)(j->w + b, j->wb + b, be - b);
    }
    return;
  }
  if (j->kind == 0) SELECT_ISA(dsv3_adamw)(j->w, j->g, j->m, j->v, s, e, j->a);
  else if (j->kind == 2) SELECT_ISA(dsv3_adamw_bf16)(j->w, j->g, j->mh, j->vh, s, e, j->a);
  else j->part[t] = SELECT_ISA(dsv3_sum_squares)(j->g, s, e);
}

/* tasks: a fixed split of n (independent of the thread count, so sums are reproducible) */
static int op_run(op_job* j) {
  int64_t tasks = j->n / OP_TASK_MIN;
  if (tasks > OP_MAX_TASKS) tasks = OP_MAX_TASKS;
  if (tasks < 1) tasks = 1;
  j->per = (j->n + tasks - 1) / tasks;
  if (j->per < 1) j->per = 1;
  const int nt = (int)((j->n + j->per - 1) / j->per);
  if (nt <= 1) {
    if (j->n > 0) op_task(j, 0, 0);
    return nt;
  }
  dsv3_parallel_for(nt, op_task, j);
  return nt;
}

/* argument 15, when passed and not undefined: wb, a Uint16Array of at least n elements */
static int op_wb(napi_env env, size_t argc, napi_value* argv, int64_t n, uint16_t** wb) {
  *wb = NULL;
  if (argc <= 15) return 0;
  napi_valuetype t;
  if (napi_typeof(env, argv[15], &t) != napi_ok) return -1;
  if (t == napi_undefined) return 0;
  return fz_typed(env, argv[15], napi_uint16_array, "wb", (size_t)n, (void**)wb);
}

static napi_value js_adamw(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 15);
  op_job j = {0};
  if (fz_count(env, argv[4], "n", &j.n)) return NULL;
  float *w, *g, *m, *v;
  if (fz_f32(env, argv[0], "w", (size_t)j.n, &w) || fz_f32(env, argv[1], "g", (size_t)j.n, &g) ||
      fz_f32(env, argv[2], "m", (size_t)j.n, &m) || fz_f32(env, argv[3], "v", (size_t)j.n, &v) ||
      op_wb(env, argc_, argv, j.n, &j.wb))
    return NULL;
  static const char* names[10] = {"gradScale", "decay", "b1", "b2", "c1", "c2", "lr", "bc1", "bc2", "eps"};
  double p[10];
  for (int i = 0; i < 10; i++)
    if (dsv3_double(env, argv[5 + i], &p[i], names[i])) return NULL;
  /* the TypeScript optimizer's hoisted constants: lr / bc1 and 1 / bc2 */
  dsv3_adamw_args a = {p[0], p[1], p[2], p[3], p[4], p[5], p[6] / p[7], 1.0 / p[8], p[9]};
  j.kind = 0;
  j.w = w;
  j.g = g;
  j.m = m;
  j.v = v;
  j.a = &a;
  op_run(&j);
  return NULL;
}

/* adamwBf16(w, g, m, v, n, ...): m, v Uint16Array of bf16 bit patterns */
static napi_value js_adamw_bf16(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 15);
  op_job j = {0};
  if (fz_count(env, argv[4], "n", &j.n)) return NULL;
  float *w, *g;
  size_t lm, lv;
  uint16_t *m, *v;
  if (fz_f32(env, argv[0], "w", (size_t)j.n, &w) || fz_f32(env, argv[1], "g", (size_t)j.n, &g) ||
      !(m = dsv3_u16(env, argv[2], &lm, "m")) || dsv3_need(env, lm, (size_t)j.n, "m") ||
      !(v = dsv3_u16(env, argv[3], &lv, "v")) || dsv3_need(env, lv, (size_t)j.n, "v") ||
      op_wb(env, argc_, argv, j.n, &j.wb))
    return NULL;
  static const char* names[10] = {"gradScale", "decay", "b1", "b2", "c1", "c2", "lr", "bc1", "bc2", "eps"};
  double p[10];
  for (int i = 0; i < 10; i++)
    if (dsv3_double(env, argv[5 + i], &p[i], names[i])) return NULL;
  dsv3_adamw_args a = {p[0], p[1], p[2], p[3], p[4], p[5], p[6] / p[7], 1.0 / p[8], p[9]};
  j.kind = 2;
  j.w = w;
  j.g = g;
  j.mh = m;
  j.vh = v;
  j.a = &a;
  op_run(&j);
  return NULL;
}

static napi_value js_sum_squares(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  op_job j = {0};
  float* x;
  if (fz_count(env, argv[1], "n", &j.n) || fz_f32(env, argv[0], "x", (size_t)j.n, &x)) return NULL;
  j.kind = 1;
  j.g = x;
  const int nt = op_run(&j);
  double s = 0;
  for (int t = 0; t < nt; t++) s += j.part[t];
  napi_value r;
  napi_create_double(env, s, &r);
  return r;
}

void dsv3_register_optim(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "adamw", js_adamw);
  dsv3_export(env, exports, "adamwBf16", js_adamw_bf16);
  dsv3_export(env, exports, "sumSquares", js_sum_squares);
}
