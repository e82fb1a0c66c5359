/* Node-API binding of the several-row routed experts (isa/moe_rows.c), with the JS signature
 * of Kernels.moeRows (src/engine/kernels.ts):
 *   moeRows(x, offsets: Int32Array, gates: Float32Array[], ups: Float32Array[], downs: Float32Array[],
 *           D, I, g, u, act, y)
 *   moeRowsBf16(...the same, the weights Uint16Array bf16 bits...): x and act are rounded to bf16
 *           (round to nearest even) before their products, float32 accumulation (gemmBf16's rule)
 * offsets has experts + 1 non-decreasing entries from 0; rows = offsets[experts]. Every
 * operand's length is checked first (RangeError / TypeError naming it). Work is split over the
 * thread pool in contiguous ranges of 4-weight-row units (about 4 per thread), twice: gate and
 * up, then (after the SiLU) down. */
#include <stdlib.h>
#include <string.h>
#include "fused_napi.h"
#include "moe_rows.h"

#define MR_MAX_EXPERTS 4096

typedef struct {
  const moe_rows_prob* P;
  int phase;
  int64_t units, per;
} mr_job;

static void mr_task(void* ctx, int t, int thread) {
  (void)thread;
  const mr_job* j = (const mr_job*)ctx;
  const int64_t u0 = (int64_t)t * j->per;
  const int64_t u1 = u0 + j->per < j->units ? u0 + j->per : j->units;
  SELECT_ISA(dsv3_moe_rows_units)(j->P, j->phase, u0, u1);
}

/* The units of a phase over the pool: contiguous ranges, so a thread streams consecutive rows. */
static void mr_run(const moe_rows_prob* P, int phase, int64_t rows) {
  const int64_t n = phase == 0 ? P->I : P->D, k = phase == 0 ? P->D : P->I;
  const int64_t units = P->experts * ((n + 3) / 4);
  const int th = dsv3_threads();
  const double work = (double)rows * (double)n * (double)k * (phase == 0 ? 2.0 : 1.0) / (double)P->experts;
  int64_t tasks = 1;
  if (th > 1 && work * (double)P->experts >= 65536.0) tasks = 4 * (int64_t)th;
  if (tasks > units) tasks = units;
  mr_job j = {P, phase, units, (units + tasks - 1) / tasks};
  if (tasks <= 1) {
    SELECT_ISA(dsv3_moe_rows_units)(P, phase, 0, units);
    return;
  }
  dsv3_parallel_for((int)((units + j.per - 1) / j.per), mr_task, &j);
}

/* float32 -> bf16 -> float32, round to nearest even, NaN kept a quiet NaN (gemm_round_bf16's rule) */
static void mr_round_bf16(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    const uint32_t q = (u | 0x00400000u) & 0xffff0000u;
    r = ((u & 0x7fffffffu) > 0x7f800000u) ? q : r;
    memcpy(&out[i], &r, 4);
  }
}

/* weights[i] of a JS array: a Float32Array (Uint16Array for bf16) of at least `need` elements */
static int mr_weights(napi_env env, napi_value arr, const char* name, int64_t count, size_t need, int bf16, const void** out) {
  uint32_t len = 0;
  if (napi_get_array_length(env, arr, &len) != napi_ok || (int64_t)len < count) {
    char msg[128];
    snprintf(msg, sizeof msg, "dsv3 native: moeRows: '%s' must be an array of %lld %s", name, (long long)count,
             bf16 ? "Uint16Arrays" : "Float32Arrays");
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  for (int64_t i = 0; i < count; i++) {
    napi_value v;
    char label[48];
    snprintf(label, sizeof label, "%s[%lld]", name, (long long)i);
    void* p;
    if (napi_get_element(env, arr, (uint32_t)i, &v) != napi_ok ||
        fz_typed(env, v, bf16 ? napi_uint16_array : napi_float32_array, label, need, &p))
      return -1;
    out[i] = p;
  }
  return 0;
}

static napi_value moe_rows_common(napi_env env, napi_callback_info info, int bf16) {
  GET_ARGS(env, info, 11);
  moe_rows_prob P = {0};
  int64_t D, I;
  if (fz_dims(env, argv[5], "D", argv[6], "I", &D, &I)) return NULL;
  void* op;
  if (fz_typed(env, argv[1], napi_int32_array, "offsets", 1, &op)) return NULL;
  size_t olen;
  napi_typedarray_type type;
  void* data;
  napi_value ab;
  size_t boff;
  napi_get_typedarray_info(env, argv[1], &type, &olen, &data, &ab, &boff);
  const int32_t* off = (const int32_t*)op;
  const int64_t E = (int64_t)olen - 1;
  if (E < 0 || E > MR_MAX_EXPERTS || off[0] != 0) {
    napi_throw_range_error(env, NULL, "dsv3 native: moeRows: offsets must hold experts + 1 (<= 4097) entries starting at 0");
    return NULL;
  }
  for (int64_t e = 0; e < E; e++)
    if (off[e + 1] < off[e]) {
      napi_throw_range_error(env, NULL, "dsv3 native: moeRows: offsets must be non-decreasing");
      return NULL;
    }
  const int64_t rows = off[E];
  float *x, *g, *u, *act, *y;
  if (fz_f32(env, argv[0], "x", (size_t)(rows * D), &x) || fz_f32(env, argv[7], "g", (size_t)(rows * I), &g) ||
      fz_f32(env, argv[8], "u", (size_t)(rows * I), &u) || fz_f32(env, argv[9], "act", (size_t)(rows * I), &act) ||
      fz_f32(env, argv[10], "y", (size_t)(rows * D), &y))
    return NULL;
  if (rows == 0 || D == 0 || I == 0) return NULL;
  const void** w = malloc(sizeof(void*) * 3 * (size_t)(E > 0 ? E : 1));
  /* bf16: x and act rounded to the bf16 grid (float32 copies) */
  float* xr = bf16 ? malloc(sizeof(float) * (size_t)(rows * D + rows * I)) : NULL;
  if (!w || (bf16 && !xr)) {
    free(w);
    free(xr);
    napi_throw_error(env, NULL, "dsv3 native: moeRows: out of memory");
    return NULL;
  }
  if (mr_weights(env, argv[2], "gates", E, (size_t)(I * D), bf16, w) || mr_weights(env, argv[3], "ups", E, (size_t)(I * D), bf16, w + E) ||
      mr_weights(env, argv[4], "downs", E, (size_t)(D * I), bf16, w + 2 * E)) {
    free(w);
    free(xr);
    return NULL;
  }
  P.bf16 = bf16;
  P.experts = E;
  P.D = D;
  P.I = I;
  P.off = off;
  if (bf16) mr_round_bf16(x, xr, rows * D);
  P.x = bf16 ? xr : x;
  P.wg = w;
  P.wu = w + E;
  P.wd = w + 2 * E;
  P.g = g;
  P.u = u;
  P.act = act;
  P.y = y;
  mr_run(&P, 0, rows);
  SELECT_ISA(dsv3_moe_rows_silu)(g, u, act, rows * I);
  if (bf16) mr_round_bf16(act, xr + rows * D, rows * I);
  P.ain = bf16 ? xr + rows * D : act;
  mr_run(&P, 1, rows);
  free(w);
  free(xr);
  return NULL;
}

static napi_value js_moe_rows(napi_env env, napi_callback_info info) { return moe_rows_common(env, info, 0); }
static napi_value js_moe_rows_bf16(napi_env env, napi_callback_info info) { return moe_rows_common(env, info, 1); }

void dsv3_register_moe_rows(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "moeRows", js_moe_rows);
  dsv3_export(env, exports, "moeRowsBf16", js_moe_rows_bf16);
}
