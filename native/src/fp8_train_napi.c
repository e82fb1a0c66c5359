/* Node-API binding of the block-scaled FP8 training GEMM (fp8_train.h, isa/fp8_train_gemm.c),
 * with the JS signature of Kernels.fp8Gemm (src/engine/kernels.ts):
 *   fp8Gemm(m, n, k, aCodes, aScales, aLayout, bCodes, bScales, bLayout, beta, c, ldc)
 * codes Uint8Array, scales Float32Array (layouts 0..3 as in fp8_train.h), beta 0 or 1, c
 * Float32Array [m][ldc], ldc >= n. Every length is checked before the kernel runs (RangeError /
 * TypeError naming the argument). The AVX-512 build uses VDPBF16PS where the CPU has
 * avx512_bf16 (and dsv3_gemm_allow_dpbf16, the GEMM's test hook, allows it).
 *   fp8GemmBatch(dims, aCodes[], aScales[], aLayout, bCodes[], bScales[], bLayout, beta, cs[], ldc)
 * runs a batch of independent fp8Gemm problems (below). */
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "fp8_train.h"
#include "fused_napi.h"
#include "gemm.h"

/* Test hook: fp8GemmAllowDp(false) makes the AVX-512 build take its float32 path (as on a CPU
 * without avx512_bf16); returns the previous setting. */
static int g_allow_dp = 1;
static napi_value js_allow_dp(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  bool on = true;
  napi_get_value_bool(env, argv[0], &on);
  napi_value r;
  napi_get_boolean(env, g_allow_dp, &r);
  g_allow_dp = on ? 1 : 0;
  return r;
}

static int f8t_layout(napi_env env, napi_value v, const char* name, int* out) {
  int64_t l;
  if (fz_count(env, v, name, &l)) return -1;
  if (l > 3) {
    char msg[128];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a layout 0..3, got %lld", name, (long long)l);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  *out = (int)l;
  return 0;
}

static napi_value js_fp8_gemm(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 12);
  f8t_prob P;
  memset(&P, 0, sizeof P);
  int64_t ldc;
  double beta;
  if (fz_dims(env, argv[0], "m", argv[2], "k", &P.m, &P.k) || fz_dims(env, argv[1], "n", argv[2], "k", &P.n, &P.k) ||
      f8t_layout(env, argv[5], "aLayout", &P.a.layout) || f8t_layout(env, argv[8], "bLayout", &P.b.layout) ||
      dsv3_double(env, argv[9], &beta, "beta") || fz_count(env, argv[11], "ldc", &ldc))
    return NULL;
  if (beta != 0.0 && beta != 1.0) {
    napi_throw_range_error(env, NULL, "dsv3 native: argument 'beta' must be 0 or 1");
    return NULL;
  }
  if (P.m > 0 && ldc < P.n) {
    napi_throw_range_error(env, NULL, "dsv3 native: argument 'ldc' must be >= n");
    return NULL;
  }
  const size_t nc = P.m == 0 || P.n == 0 ? 0 : (size_t)((P.m - 1) * ldc + P.n);
  void *ac, *as, *bc, *bs, *c;
  size_t lac, lbc;
  if (!(ac = dsv3_u8(env, argv[3], &lac, "aCodes")) || dsv3_need(env, lac, (size_t)(P.m * P.k), "aCodes") ||
      fz_typed(env, argv[4], napi_float32_array, "aScales", (size_t)f8t_scale_count(P.a.layout, P.m, P.k), &as) ||
      !(bc = dsv3_u8(env, argv[6], &lbc, "bCodes")) || dsv3_need(env, lbc, (size_t)(P.n * P.k), "bCodes") ||
      fz_typed(env, argv[7], napi_float32_array, "bScales", (size_t)f8t_scale_count(P.b.layout, P.n, P.k), &bs) ||
      fz_typed(env, argv[10], napi_float32_array, "c", nc, &c))
    return NULL;
  P.a.codes = (const uint8_t*)ac;
  P.a.scales = (const float*)as;
  P.b.codes = (const uint8_t*)bc;
  P.b.scales = (const float*)bs;
  P.beta = (float)beta;
  P.c = (float*)c;
  P.ldc = ldc;
  P.dp = dsv3_isa() == DSV3_ISA_LEVEL_AVX512 && dsv3_has_avx512_bf16() && dsv3_gemm_allow_dpbf16 && g_allow_dp;
  P.threads = dsv3_in_task() ? 1 : dsv3_threads();
  if (SELECT_ISA(dsv3_fp8_train_gemm)(&P)) {
    napi_throw_error(env, NULL, "dsv3 native: fp8Gemm could not allocate its scratch memory");
    return NULL;
  }
  return NULL;
}

/* fp8GemmBatch(dims, aCodes[], aScales[], aLayout, bCodes[], bScales[], bLayout, beta, cs[], ldc):
 * problem i (dims[3i..3i+2] = m, n, k) is fp8Gemm(m, n, k, aCodes[i], aScales[i], aLayout,
 * bCodes[i], bScales[i], bLayout, beta, cs[i], ldc). The problems run concurrently, each on one
 * pool thread, largest first (the MoE experts' GEMMs: one parallel region per projection
 * instead of one per expert); a problem's result does not depend on the thread count, so it
 * equals the separate call's. Overlapping C regions run one after another, in order. */
#define F8B_MAX 4096
typedef struct {
  f8t_prob* p;
  const int* order;
  volatile int fail;
} f8b_job;

static void f8b_task(void* ctx, int t, int thread) {
  (void)thread;
  f8b_job* j = (f8b_job*)ctx;
  if (SELECT_ISA(dsv3_fp8_train_gemm)(&j->p[j->order[t]])) j->fail = 1;
}

static int f8b_elem(napi_env env, napi_value arr, uint32_t i, const char* name, int u8, size_t need, void** out) {
  napi_value v;
  char label[48];
  snprintf(label, sizeof label, "%s[%u]", name, i);
  if (napi_get_element(env, arr, i, &v) != napi_ok) return -1;
  if (!u8) return fz_typed(env, v, napi_float32_array, label, need, out);
  size_t len;
  if (!(*out = dsv3_u8(env, v, &len, label))) return -1;
  return dsv3_need(env, len, need, label);
}

static const f8t_prob* f8b_sort_probs;
static int f8b_cmp_work(const void* x, const void* y) { /* descending m*n*k */
  const f8t_prob *a = &f8b_sort_probs[*(const int*)x], *b = &f8b_sort_probs[*(const int*)y];
  const double wa = (double)a->m * a->n * a->k, wb = (double)b->m * b->n * b->k;
  return wa > wb ? -1 : wa < wb ? 1 : *(const int*)x - *(const int*)y;
}
static int f8b_cmp_region(const void* x, const void* y) {
  const uintptr_t *a = (const uintptr_t*)x, *b = (const uintptr_t*)y;
  return a[0] < b[0] ? -1 : a[0] > b[0];
}

static napi_value js_fp8_gemm_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 10);
  int la, lb;
  double beta;
  int64_t ldc;
  if (f8t_layout(env, argv[3], "aLayout", &la) || f8t_layout(env, argv[6], "bLayout", &lb) ||
      dsv3_double(env, argv[7], &beta, "beta") || fz_count(env, argv[9], "ldc", &ldc))
    return NULL;
  if (beta != 0.0 && beta != 1.0) {
    napi_throw_range_error(env, NULL, "dsv3 native: argument 'beta' must be 0 or 1");
    return NULL;
  }
  void* dp;
  size_t ndims, off;
  napi_value ab;
  napi_typedarray_type type;
  bool is = false;
  if (napi_is_typedarray(env, argv[0], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[0], &type, &ndims, &dp, &ab, &off) != napi_ok || type != napi_int32_array ||
      ndims % 3 != 0 || ndims / 3 > F8B_MAX) {
    napi_throw_type_error(env, NULL, "dsv3 native: fp8GemmBatch: dims must be an Int32Array of (m, n, k) triples (at most 4096)");
    return NULL;
  }
  const int count = (int)(ndims / 3);
  const int32_t* dims = (const int32_t*)dp;
  const napi_value arrs[5] = {argv[1], argv[2], argv[4], argv[5], argv[8]};
  for (int q = 0; q < 5; q++) {
    uint32_t len = 0;
    bool isa = false;
    if (napi_is_array(env, arrs[q], &isa) != napi_ok || !isa || napi_get_array_length(env, arrs[q], &len) != napi_ok ||
        (int)len < count) {
      napi_throw_range_error(env, NULL, "dsv3 native: fp8GemmBatch: aCodes, aScales, bCodes, bScales and cs need one array per problem");
      return NULL;
    }
  }
  if (count == 0) return NULL;
  f8t_prob* P = calloc((size_t)count, sizeof(f8t_prob));
  int* order = malloc(sizeof(int) * (size_t)count);
  uintptr_t* reg = malloc(sizeof(uintptr_t) * 2 * (size_t)count);
  int nreg = 0, ok = P && order && reg;
  if (!ok) napi_throw_error(env, NULL, "dsv3 native: fp8GemmBatch: out of memory");
  const int dpath = dsv3_isa() == DSV3_ISA_LEVEL_AVX512 && dsv3_has_avx512_bf16() && dsv3_gemm_allow_dpbf16 && g_allow_dp;
  for (int i = 0; ok && i < count; i++) {
    const int64_t m = dims[3 * i], n = dims[3 * i + 1], k = dims[3 * i + 2];
    if (m < 0 || n < 0 || k < 0 || (m > 0 && ldc < n)) {
      char msg[160];
      snprintf(msg, sizeof msg, "dsv3 native: fp8GemmBatch: problem %d (%lld x %lld x %lld) needs non-negative sizes and ldc >= n", i,
               (long long)m, (long long)n, (long long)k);
      napi_throw_range_error(env, NULL, msg);
      ok = 0;
      break;
    }
    const size_t nc = m == 0 || n == 0 ? 0 : (size_t)((m - 1) * ldc + n);
    void *ac, *as, *bc, *bs, *c;
    if (f8b_elem(env, argv[1], (uint32_t)i, "aCodes", 1, (size_t)(m * k), &ac) ||
        f8b_elem(env, argv[2], (uint32_t)i, "aScales", 0, (size_t)f8t_scale_count(la, m, k), &as) ||
        f8b_elem(env, argv[4], (uint32_t)i, "bCodes", 1, (size_t)(n * k), &bc) ||
        f8b_elem(env, argv[5], (uint32_t)i, "bScales", 0, (size_t)f8t_scale_count(lb, n, k), &bs) ||
        f8b_elem(env, argv[8], (uint32_t)i, "cs", 0, nc, &c)) {
      ok = 0;
      break;
    }
    P[i] = (f8t_prob){.m = m, .n = n, .k = k, .a = {(const uint8_t*)ac, (const float*)as, la},
                      .b = {(const uint8_t*)bc, (const float*)bs, lb}, .beta = (float)beta, .c = (float*)c, .ldc = ldc,
                      .dp = dpath, .threads = 1};
    order[i] = i;
    if (nc > 0) {
      reg[2 * nreg] = (uintptr_t)c;
      reg[2 * nreg + 1] = (uintptr_t)((float*)c + nc);
      nreg++;
    }
  }
  if (ok) {
    f8b_job j = {P, order, 0};
    qsort(reg, (size_t)nreg, 2 * sizeof(uintptr_t), f8b_cmp_region);
    int overlap = 0;
    for (int r = 1; r < nreg; r++)
      if (reg[2 * r] < reg[2 * r - 1]) overlap = 1;
    const int T = dsv3_in_task() ? 1 : dsv3_threads();
    if (count == 1 || overlap || T <= 1) { /* in order, each problem on all threads */
      for (int i = 0; i < count; i++) {
        P[i].threads = T;
        if (SELECT_ISA(dsv3_fp8_train_gemm)(&P[i])) j.fail = 1;
      }
    } else {
      f8b_sort_probs = P; /* the JS thread is the only caller */
      qsort(order, (size_t)count, sizeof(int), f8b_cmp_work);
      dsv3_parallel_for(count, f8b_task, &j);
    }
    if (j.fail) napi_throw_error(env, NULL, "dsv3 native: fp8GemmBatch could not allocate its scratch memory");
  }
  free(P);
  free(order);
  free(reg);
  return NULL;
}

void dsv3_register_fp8_train(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "fp8Gemm", js_fp8_gemm);
  dsv3_export(env, exports, "fp8GemmBatch", js_fp8_gemm_batch);
  dsv3_export(env, exports, "fp8GemmAllowDp", js_allow_dp);
}
