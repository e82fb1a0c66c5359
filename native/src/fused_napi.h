/* Helpers shared by the fused-kernel bindings (fused_napi.c, elementwise_napi.c,
 * attention_napi.c): strict size arguments, length-checked Float32Array arguments, ISA
 * selection from a 3-entry table, and running a row kernel on the thread pool. */
#ifndef DSV3_FUSED_NAPI_H
#define DSV3_FUSED_NAPI_H
#include <math.h>
#include "cpu.h"
#include "fused.h"
#include "napi_util.h"
#include "threadpool.h"

/* Calls under this many elements of work run inline: waking the pool costs more than an 8x8
 * kernel (which must stay ~1 us). Above it, tasks of at least FZ_TASK_MIN elements. */
#define FZ_PAR_MIN 32768
#define FZ_TASK_MIN 16384

/* fns = {avx512, avx2, scalar} */
#define FZ_PICK(fns) ((fns)[dsv3_isa() == DSV3_ISA_LEVEL_AVX512 ? 0 : dsv3_isa() == DSV3_ISA_LEVEL_AVX2 ? 1 : 2])

/* A size argument: a non-negative integral number (RangeError otherwise). */
static inline int fz_count(napi_env env, napi_value v, const char* name, int64_t* out) {
  double d;
  if (dsv3_double(env, v, &d, name)) return -1;
  if (!(d >= 0) || d > 9007199254740991.0 || d != floor(d)) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a non-negative integer, got %g", name, d);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

/* Two size arguments whose product (an element count) must also stay below 2^53. */
static inline int fz_dims(napi_env env, napi_value va, const char* na, napi_value vb, const char* nb, int64_t* a,
                          int64_t* b) {
  if (fz_count(env, va, na, a) || fz_count(env, vb, nb, b)) return -1;
  if (*b != 0 && *a > 9007199254740991LL / *b) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: %s x %s is too large", na, nb);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  return 0;
}

/* A typed-array argument of type `want` with at least `need` elements (TypeError /
 * RangeError naming it). Unlike dsv3_typed, an empty array (whose data pointer Node-API may
 * report as NULL) is accepted and yields a valid, never-dereferenced pointer. */
static inline int fz_typed(napi_env env, napi_value v, napi_typedarray_type want, const char* name, size_t need,
                           void** out) {
  static float empty[16];
  bool is = false;
  napi_typedarray_type type;
  size_t len, off;
  void* data = NULL;
  napi_value ab;
  char msg[160];
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, &len, &data, &ab, &off) != napi_ok || type != want) {
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a %s", name,
             want == napi_int32_array ? "Int32Array" : want == napi_uint16_array ? "Uint16Array" : "Float32Array");
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  if (dsv3_need(env, len, need, name)) return -1;
  *out = data ? data : (void*)empty;
  return 0;
}

static inline int fz_f32(napi_env env, napi_value v, const char* name, size_t need, float** out) {
  void* p;
  if (fz_typed(env, v, napi_float32_array, name, need, &p)) return -1;
  *out = (float*)p;
  return 0;
}

typedef struct {
  dsv3_rows_fn fn;
  const dsv3_rows_args* a;
  int64_t per; /* rows per task */
  float* part; /* rmsNormBackward: one [cols] partial per task */
} fz_rows_job;

static void fz_rows_task(void* ctx, int t, int thread) {
  (void)thread;
  const fz_rows_job* j = (const fz_rows_job*)ctx;
  const int64_t r0 = (int64_t)t * j->per;
  const int64_t r1 = r0 + j->per < j->a->rows ? r0 + j->per : j->a->rows;
  j->fn(j->a, r0, r1, j->part ? j->part + (size_t)t * (size_t)j->a->cols : NULL);
}

/* Runs a row kernel over all rows: inline for small calls, else row ranges on the pool
 * (at most 8 tasks per thread, so dynamic claiming balances uneven rows). */
static inline void fz_run_rows(dsv3_rows_fn fn, const dsv3_rows_args* a) {
  const int64_t rows = a->rows, work = a->rows * a->cols;
  const int th = dsv3_threads();
  if (rows == 0) return;
  if (th <= 1 || rows < 2 || work < FZ_PAR_MIN) {
    fn(a, 0, rows, NULL);
    return;
  }
  int64_t tasks = work / FZ_TASK_MIN;
  if (tasks > (int64_t)th * 8) tasks = (int64_t)th * 8;
  if (tasks > rows) tasks = rows;
  if (tasks < 2) tasks = 2;
  fz_rows_job j = {fn, a, (rows + tasks - 1) / tasks, NULL};
  dsv3_parallel_for((int)((rows + j.per - 1) / j.per), fz_rows_task, &j);
}
#endif
