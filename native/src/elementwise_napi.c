/* Node-API bindings of the elementwise kernels (isa/elementwise.c): binary, axpy, siluMul,
 * siluMulBackward, and their bf16 forms siluMulRound, siluMulBf16 and siluMulBackwardBf16, with the JS signatures of the `Kernels` interface. Buffers shorter than n
 * are a RangeError naming the argument; an unknown binary op is a RangeError. Large calls
 * are split into contiguous ranges on the thread pool (these kernels are memory-bound, so
 * the ranges are big: >= 64K elements). */
#include <stdlib.h>
#include "bf16_convert.h"
#include "fused_napi.h"

#define EW_PAR_MIN (1 << 17)
#define EW_TASK_MIN (1 << 16)

typedef struct {
  int kind; /* 0 binary, 1 axpy, 2 siluMul, 3 siluMulBackward, 4 siluMulRound, 5 siluMulBackwardBf16, 6 siluMulBf16 */
  int op;
  float alpha;
  const float *a, *b, *c;
  float *o0, *o1;
  const uint16_t *ha, *hb; /* 5, 6: g, u as bf16 bits */
  uint16_t *h0, *h1;       /* 4: g, u rounded to bf16 bits; 5 (optional): dg, du rounded */
  int64_t n, per;
} ew_job;

/* The fused bf16 forms run the unfused kernels block by block (EW_BLOCK elements, in L1): the
 * same functions on the same elements, so the results are those of the unfused calls, bit for
 * bit, without the full-size passes over memory (and, backward, the float32 scratch of g, u). */
#define EW_BLOCK 1024
static void ew_silu_round(const ew_job* j, int64_t s, int64_t e) {
  for (int64_t i = s; i < e; i += EW_BLOCK) {
    const int64_t n = e - i < EW_BLOCK ? e - i : EW_BLOCK;
    SELECT_ISA(dsv3_silu_mul)(j->a + i, j->b + i, j->o0 + i, n);
    SELECT_ISA(dsv3_bf16_round)(j->a + i, j->h0 + i, n);
    SELECT_ISA(dsv3_bf16_round)(j->b + i, j->h1 + i, n);
  }
}
static void ew_silu_bf16(const ew_job* j, int64_t s, int64_t e) {
  float g[EW_BLOCK], u[EW_BLOCK];
  for (int64_t i = s; i < e; i += EW_BLOCK) {
    const int64_t n = e - i < EW_BLOCK ? e - i : EW_BLOCK;
    SELECT_ISA(dsv3_bf16_widen)(j->ha + i, g, n);
    SELECT_ISA(dsv3_bf16_widen)(j->hb + i, u, n);
    SELECT_ISA(dsv3_silu_mul)(g, u, j->o0 + i, n);
  }
}
static void ew_silu_bwd_bf16(const ew_job* j, int64_t s, int64_t e) {
  float g[EW_BLOCK], u[EW_BLOCK];
  for (int64_t i = s; i < e; i += EW_BLOCK) {
    const int64_t n = e - i < EW_BLOCK ? e - i : EW_BLOCK;
    SELECT_ISA(dsv3_bf16_widen)(j->ha + i, g, n);
    SELECT_ISA(dsv3_bf16_widen)(j->hb + i, u, n);
    SELECT_ISA(dsv3_silu_mul_bwd)(g, u, j->c + i, j->o0 + i, j->o1 + i, n);
    if (j->h0) SELECT_ISA(dsv3_bf16_round)(j->o0 + i, j->h0 + i, n);
    if (j->h1) SELECT_ISA(dsv3_bf16_round)(j->o1 + i, j->h1 + i, n);
  }
}

static void ew_range(const ew_job* j, int64_t s, int64_t e) {
  const int64_t n = e - s;
  switch (j->kind) {
    case 0: SELECT_ISA(dsv3_binary)(j->op, j->a + s, j->b + s, j->o0 + s, n); break;
    case 1: SELECT_ISA(dsv3_axpy)(j->alpha, j->a + s, j->o0 + s, n); break;
    case 2: SELECT_ISA(dsv3_silu_mul)(j->a + s, j->b + s, j->o0 + s, n); break;
    case 4: ew_silu_round(j, s, e); break;
    case 5: ew_silu_bwd_bf16(j, s, e); break;
    case 6: ew_silu_bf16(j, s, e); break;
    default: SELECT_ISA(dsv3_silu_mul_bwd)(j->a + s, j->b + s, j->c + s, j->o0 + s, j->o1 + s, n); break;
  }
}

static void ew_task(void* ctx, int t, int thread) {
  (void)thread;
  const ew_job* j = (const ew_job*)ctx;
  const int64_t s = (int64_t)t * j->per;
  ew_range(j, s, s + j->per < j->n ? s + j->per : j->n);
}

/* exp-heavy kernels (SwiGLU) are worth splitting at a quarter of the size of pure streams */
static void ew_run(ew_job* j, int heavy) {
  const int th = dsv3_threads();
  const int64_t par_min = heavy ? EW_PAR_MIN / 4 : EW_PAR_MIN, task_min = heavy ? EW_TASK_MIN / 4 : EW_TASK_MIN;
  if (th <= 1 || j->n < par_min) {
    ew_range(j, 0, j->n);
    return;
  }
  int64_t tasks = j->n / task_min;
  if (tasks > (int64_t)th * 4) tasks = (int64_t)th * 4;
  if (tasks < 2) tasks = 2;
  j->per = ((j->n + tasks - 1) / tasks + 15) / 16 * 16; /* ranges start on 64-byte multiples */
  dsv3_parallel_for((int)((j->n + j->per - 1) / j->per), ew_task, j);
}

/* binary(op, a, b, out, n) */
static napi_value js_binary(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 5);
  ew_job j = {0};
  int64_t op;
  float *a, *b, *out;
  if (dsv3_int(env, argv[0], &op, "op") || fz_count(env, argv[4], "n", &j.n)) return NULL;
  if (op < 0 || op > 3) {
    char msg[96];
    snprintf(msg, sizeof msg, "binary: unknown op %lld", (long long)op);
    napi_throw_range_error(env, NULL, msg);
    return NULL;
  }
  if (fz_f32(env, argv[1], "a", (size_t)j.n, &a) || fz_f32(env, argv[2], "b", (size_t)j.n, &b) ||
      fz_f32(env, argv[3], "out", (size_t)j.n, &out))
    return NULL;
  j.kind = 0;
  j.op = (int)op;
  j.a = a;
  j.b = b;
  j.o0 = out;
  ew_run(&j, 0);
  return NULL;
}

/* axpy(alpha, x, y, n): y += alpha * x */
static napi_value js_axpy(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  ew_job j = {0};
  double alpha;
  float *x, *y;
  if (dsv3_double(env, argv[0], &alpha, "alpha") || fz_count(env, argv[3], "n", &j.n)) return NULL;
  if (fz_f32(env, argv[1], "x", (size_t)j.n, &x) || fz_f32(env, argv[2], "y", (size_t)j.n, &y)) return NULL;
  j.kind = 1;
  j.alpha = (float)alpha;
  j.a = x;
  j.o0 = y;
  ew_run(&j, 0);
  return NULL;
}

/* siluMul(g, u, y, n) */
static napi_value js_silu_mul(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  ew_job j = {0};
  float *g, *u, *y;
  if (fz_count(env, argv[3], "n", &j.n)) return NULL;
  if (fz_f32(env, argv[0], "g", (size_t)j.n, &g) || fz_f32(env, argv[1], "u", (size_t)j.n, &u) ||
      fz_f32(env, argv[2], "y", (size_t)j.n, &y))
    return NULL;
  j.kind = 2;
  j.a = g;
  j.b = u;
  j.o0 = y;
  ew_run(&j, 1);
  return NULL;
}

/* siluMulBackward(g, u, dy, dg, du, n) */
static napi_value js_silu_mul_bwd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 6);
  ew_job j = {0};
  float *g, *u, *dy, *dg, *du;
  if (fz_count(env, argv[5], "n", &j.n)) return NULL;
  if (fz_f32(env, argv[0], "g", (size_t)j.n, &g) || fz_f32(env, argv[1], "u", (size_t)j.n, &u) ||
      fz_f32(env, argv[2], "dy", (size_t)j.n, &dy) || fz_f32(env, argv[3], "dg", (size_t)j.n, &dg) ||
      fz_f32(env, argv[4], "du", (size_t)j.n, &du))
    return NULL;
  j.kind = 3;
  j.a = g;
  j.b = u;
  j.c = dy;
  j.o0 = dg;
  j.o1 = du;
  ew_run(&j, 1);
  return NULL;
}

/* siluMulRound(g, u, y, g16, u16, n): siluMul, and g, u rounded to bf16 bits (bf16Round) */
static napi_value js_silu_mul_round(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 6);
  ew_job j = {0};
  float *g, *u, *y;
  uint16_t *g16, *u16;
  if (fz_count(env, argv[5], "n", &j.n)) return NULL;
  if (fz_f32(env, argv[0], "g", (size_t)j.n, &g) || fz_f32(env, argv[1], "u", (size_t)j.n, &u) ||
      fz_f32(env, argv[2], "y", (size_t)j.n, &y) ||
      fz_typed(env, argv[3], napi_uint16_array, "g16", (size_t)j.n, (void**)&g16) ||
      fz_typed(env, argv[4], napi_uint16_array, "u16", (size_t)j.n, (void**)&u16))
    return NULL;
  j.kind = 4;
  j.a = g;
  j.b = u;
  j.o0 = y;
  j.h0 = g16;
  j.h1 = u16;
  ew_run(&j, 1);
  return NULL;
}

/* siluMulBf16(g16, u16, y, n): siluMul of g, u given as bf16 bits */
static napi_value js_silu_mul_bf16(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  ew_job j = {0};
  uint16_t *g16, *u16;
  float* y;
  if (fz_count(env, argv[3], "n", &j.n)) return NULL;
  if (fz_typed(env, argv[0], napi_uint16_array, "g16", (size_t)j.n, (void**)&g16) ||
      fz_typed(env, argv[1], napi_uint16_array, "u16", (size_t)j.n, (void**)&u16) ||
      fz_f32(env, argv[2], "y", (size_t)j.n, &y))
    return NULL;
  j.kind = 6;
  j.ha = g16;
  j.hb = u16;
  j.o0 = y;
  ew_run(&j, 1);
  return NULL;
}

/* argument i, when passed and not undefined: a Uint16Array of at least n elements */
static int ew_opt_u16(napi_env env, size_t argc, napi_value* argv, size_t i, const char* name, int64_t n, uint16_t** out) {
  *out = NULL;
  if (argc <= i) return 0;
  napi_valuetype t;
  if (napi_typeof(env, argv[i], &t) != napi_ok) return -1;
  if (t == napi_undefined) return 0;
  return fz_typed(env, argv[i], napi_uint16_array, name, (size_t)n, (void**)out);
}

/* siluMulBackwardBf16(g16, u16, dy, dg, du, n[, dg16, du16]): siluMulBackward of g, u given as
 * bf16 bits; dg16 / du16 (optional): also the bf16 bits of dg / du, rounded block by block */
static napi_value js_silu_mul_bwd_bf16(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 6);
  ew_job j = {0};
  uint16_t *g16, *u16;
  float *dy, *dg, *du;
  if (fz_count(env, argv[5], "n", &j.n)) return NULL;
  if (fz_typed(env, argv[0], napi_uint16_array, "g16", (size_t)j.n, (void**)&g16) ||
      fz_typed(env, argv[1], napi_uint16_array, "u16", (size_t)j.n, (void**)&u16) ||
      fz_f32(env, argv[2], "dy", (size_t)j.n, &dy) || fz_f32(env, argv[3], "dg", (size_t)j.n, &dg) ||
      fz_f32(env, argv[4], "du", (size_t)j.n, &du) || ew_opt_u16(env, argc_, argv, 6, "dg16", j.n, &j.h0) ||
      ew_opt_u16(env, argc_, argv, 7, "du16", j.n, &j.h1))
    return NULL;
  j.kind = 5;
  j.ha = g16;
  j.hb = u16;
  j.c = dy;
  j.o0 = dg;
  j.o1 = du;
  ew_run(&j, 1);
  return NULL;
}

void dsv3_register_elementwise(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "binary", js_binary);
  dsv3_export(env, exports, "axpy", js_axpy);
  dsv3_export(env, exports, "siluMul", js_silu_mul);
  dsv3_export(env, exports, "siluMulBackward", js_silu_mul_bwd);
  dsv3_export(env, exports, "siluMulRound", js_silu_mul_round);
  dsv3_export(env, exports, "siluMulBackwardBf16", js_silu_mul_bwd_bf16);
  dsv3_export(env, exports, "siluMulBf16", js_silu_mul_bf16);
}
