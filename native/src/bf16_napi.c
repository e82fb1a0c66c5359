/* Node-API bindings of the bf16 conversions (isa/bf16_convert.c), with the JS signatures of
 * Kernels.bf16Round / Kernels.bf16Widen (src/engine/kernels.ts):
 *   bf16Round(x: Float32Array, out: Uint16Array, n)   bf16Widen(h: Uint16Array, out: Float32Array, n)
 *   bf16RoundRows(x: Float32Array, out: Uint16Array, rows, cols, ldo)  (out rows ldo apart)
 * A buffer shorter than n is a RangeError naming it. Large calls are split into contiguous
 * ranges on the thread pool (memory-bound: ranges of >= 64K elements). */
#include "bf16_convert.h"
#include "fused_napi.h"

#define CV_PAR_MIN (1 << 17)
#define CV_TASK_MIN (1 << 16)

typedef struct {
  int widen;
  int64_t cols, ldo; /* bf16RoundRows: n = rows, per = rows per task */
  const float* x;
  const uint16_t* h;
  uint16_t* oh;
  float* of;
  int64_t n, per;
} cv_job;

static void cv_range(const cv_job* j, int64_t s, int64_t e) {
  if (j->ldo) {
    for (int64_t r = s; r < e; r++) SELECT_ISA(dsv3_bf16_round)(j->x + r * j->cols, j->oh + r * j->ldo, j->cols);
  } else if (j->widen) SELECT_ISA(dsv3_bf16_widen)(j->h + s, j->of + s, e - s);
  else SELECT_ISA(dsv3_bf16_round)(j->x + s, j->oh + s, e - s);
}

static void cv_task(void* ctx, int t, int thread) {
  (void)thread;
  const cv_job* j = (const cv_job*)ctx;
  const int64_t s = (int64_t)t * j->per;
  cv_range(j, s, s + j->per < j->n ? s + j->per : j->n);
}

static void cv_run(cv_job* j) {
  const int th = dsv3_threads();
  if (th <= 1 || j->n < CV_PAR_MIN) {
    cv_range(j, 0, j->n);
    return;
  }
  int64_t tasks = j->n / CV_TASK_MIN;
  if (tasks > (int64_t)th * 4) tasks = (int64_t)th * 4;
  if (tasks < 2) tasks = 2;
  j->per = ((j->n + tasks - 1) / tasks + 31) / 32 * 32; /* ranges start on 64-byte multiples */
  dsv3_parallel_for((int)((j->n + j->per - 1) / j->per), cv_task, j);
}

static napi_value js_bf16_round(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  cv_job j = {0};
  float* x;
  uint16_t* out;
  if (fz_count(env, argv[2], "n", &j.n) || fz_f32(env, argv[0], "x", (size_t)j.n, &x) ||
      fz_typed(env, argv[1], napi_uint16_array, "out", (size_t)j.n, (void**)&out))
    return NULL;
  j.x = x;
  j.oh = out;
  cv_run(&j);
  return NULL;
}

static napi_value js_bf16_widen(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  cv_job j = {0};
  uint16_t* h;
  float* out;
  if (fz_count(env, argv[2], "n", &j.n) || fz_typed(env, argv[0], napi_uint16_array, "h", (size_t)j.n, (void**)&h) ||
      fz_f32(env, argv[1], "out", (size_t)j.n, &out))
    return NULL;
  j.widen = 1;
  j.h = h;
  j.of = out;
  cv_run(&j);
  return NULL;
}

static napi_value js_bf16_round_rows(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 5);
  cv_job j = {0};
  int64_t rows, cols, ldo;
  float* x;
  uint16_t* out;
  if (fz_count(env, argv[2], "rows", &rows) || fz_count(env, argv[3], "cols", &cols) || fz_count(env, argv[4], "ldo", &ldo)) return NULL;
  if (ldo < cols || ldo < 1) {
    napi_throw_range_error(env, NULL, "dsv3 native: bf16RoundRows: ldo must be >= cols and >= 1");
    return NULL;
  }
  if (fz_f32(env, argv[0], "x", (size_t)(rows * cols), &x) ||
      fz_typed(env, argv[1], napi_uint16_array, "out", rows > 0 && cols > 0 ? (size_t)((rows - 1) * ldo + cols) : 0, (void**)&out))
    return NULL;
  j.x = x;
  j.oh = out;
  j.cols = cols;
  j.ldo = ldo;
  j.n = rows;
  const int th = dsv3_threads();
  if (th <= 1 || rows * cols < CV_PAR_MIN || rows < 2) {
    cv_range(&j, 0, rows);
    return NULL;
  }
  int64_t tasks = rows * cols / CV_TASK_MIN;
  if (tasks > (int64_t)th * 4) tasks = (int64_t)th * 4;
  if (tasks > rows) tasks = rows;
  if (tasks < 2) tasks = 2;
  j.per = (rows + tasks - 1) / tasks;
  dsv3_parallel_for((int)((rows + j.per - 1) / j.per), cv_task, &j);
  return NULL;
}

void dsv3_register_bf16(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "bf16RoundRows", js_bf16_round_rows);
  dsv3_export(env, exports, "bf16Round", js_bf16_round);
  dsv3_export(env, exports, "bf16Widen", js_bf16_widen);
}
