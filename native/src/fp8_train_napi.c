/* Node-API binding of the block-scaled FP8 training GEMM (fp8_train.h, isa/fp8_train_gemm.c),
 * with the JS signature of Kernels.fp8Gemm (src/engine/kernels.ts):
 *   fp8Gemm(m, n, k, aCodes, aScales, aLayout, bCodes, bScales, bLayout, beta, c, ldc)
 * codes Uint8Array, scales Float32Array (layouts 0..3 as in fp8_train.h), beta 0 or 1, c
 * Float32Array [m][ldc], ldc >= n. Every length is checked before the kernel runs (RangeError /
 * TypeError naming the argument). The AVX-512 build uses VDPBF16PS where the CPU has
 * avx512_bf16 (and dsv3_gemm_allow_dpbf16, the GEMM's test hook, allows it). */
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

void dsv3_register_fp8_train(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "fp8Gemm", js_fp8_gemm);
  dsv3_export(env, exports, "fp8GemmAllowDp", js_allow_dp);
}
