/* GEMM: ISA dispatch, the AVX-512 load-time self-check, and the Node-API bindings
 *   gemmF32(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)   b: Float32Array
 *   gemmBf16(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)  b: Uint16Array
 *   gemmBf16Ab(...same...)                                                    a, b: Uint16Array
 *   gemmSelfCheck(isa) -> boolean (that ISA's GEMMs agree with the scalar ones)
 *   gemmAllowDpbf16(on) -> boolean (test hook: off forces the widening bf16 path)
 * with the semantics of Kernels.gemm / Kernels.gemmBf16 (src/engine/kernels.ts). Every size is
 * checked before any memory is touched: a bad call throws TypeError / RangeError naming the
 * argument. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "gemm.h"
#include "napi_util.h"

int dsv3_gemm_allow_dpbf16 = 1;
int dsv3_gemm_round_prepass = 1;

/* ---- self-check ---------------------------------------------------------------------------- */

typedef int (*gemm_f32_fn)(int, int, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                           float, float*, int64_t);
typedef int (*gemm_bf16_fn)(int, int, int64_t, int64_t, int64_t, float, const float*, int64_t, const uint16_t*,
                            int64_t, float, float*, int64_t);
typedef int (*gemm_bf16ab_fn)(int, int, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*,
                              int64_t, float, float*, int64_t);

static float rnd(uint32_t* s) { /* xorshift -> [-1, 1) */
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* One case: m,n,k, transposes, alpha/beta; odd leading dimensions; C pre-filled with NaN when
 * beta == 0. The tolerance is relative to sum |alpha a b| + |beta c| per output. */
static int check_case(gemm_f32_fn f, gemm_bf16_fn fb, gemm_bf16ab_fn fab, int m, int n, int k, int ta, int tb, float alpha,
                      float beta, int use_bf16, uint32_t seed) {
  const int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
  const size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb, nc = (size_t)m * ldc;
  float* a = malloc(na * 4);
  float* b = malloc(nb * 4);
  uint16_t* bh = malloc(nb * 2);
  uint16_t* ah = malloc(na * 2);
  float *c0 = malloc(nc * 4), *c1 = malloc(nc * 4), *mag = malloc(nc * 4);
  int ok = a && b && bh && ah && c0 && c1 && mag;
  if (ok) {
    for (size_t i = 0; i < na; i++) {
      a[i] = rnd(&seed);
      if (use_bf16 == 2) { /* A on the bf16 grid (truncated), and its bits */
        uint32_t u;
        memcpy(&u, &a[i], 4);
        ah[i] = (uint16_t)(u >> 16);
        u &= 0xffff0000u;
        memcpy(&a[i], &u, 4);
      }
    }
    for (size_t i = 0; i < nb; i++) {
      b[i] = rnd(&seed);
      uint32_t u;
      memcpy(&u, &b[i], 4);
      bh[i] = (uint16_t)(u >> 16);
    }
    for (size_t i = 0; i < nc; i++) c0[i] = c1[i] = beta == 0.0f ? NAN : rnd(&seed);
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        double s = 0;
        for (int p = 0; p < k; p++) s += fabs(a[ta ? p * lda + i : i * lda + p] * b[tb ? j * ldb + p : p * ldb + j]);
        mag[i * ldc + j] = (float)(fabs(alpha) * s + (beta == 0.0f ? 0.0 : fabs(beta * c0[i * ldc + j])));
      }
    if (use_bf16 == 2) { /* bf16ab against the scalar gemm_bf16 of the widened A */
      ok = dsv3_gemm_bf16_scalar(ta, tb, m, n, k, alpha, a, lda, bh, ldb, beta, c0, ldc) == 0 &&
           fab(ta, tb, m, n, k, alpha, ah, lda, bh, ldb, beta, c1, ldc) == 0;
    } else if (use_bf16) {
      ok = dsv3_gemm_bf16_scalar(ta, tb, m, n, k, alpha, a, lda, bh, ldb, beta, c0, ldc) == 0 &&
           fb(ta, tb, m, n, k, alpha, a, lda, bh, ldb, beta, c1, ldc) == 0;
    } else {
      ok = dsv3_gemm_f32_scalar(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc) == 0 &&
           f(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c1, ldc) == 0;
    }
    for (int i = 0; ok && i < m; i++)
      for (int j = 0; j < n; j++) {
        const float x = c0[i * ldc + j], y = c1[i * ldc + j];
        if (!(fabsf(x - y) <= 3e-7f * (float)(k + 4) * mag[i * ldc + j] + 1e-30f)) ok = 0;
      }
    /* the padding between rows of C must be untouched */
    for (int i = 0; ok && i < m; i++)
      for (int j = n; j < ldc; j++) {
        const float x = c0[i * ldc + j], y = c1[i * ldc + j];
        if (memcmp(&x, &y, 4)) ok = 0;
      }
  }
  free(a);
  free(b);
  free(bh);
  free(ah);
  free(c0);
  free(c1);
  free(mag);
  return ok;
}

int dsv3_gemm_selfcheck(int level) {
  gemm_f32_fn f = level == DSV3_ISA_LEVEL_AVX512 ? dsv3_gemm_f32_avx512 : level == DSV3_ISA_LEVEL_AVX2 ? dsv3_gemm_f32_avx2 : dsv3_gemm_f32_scalar;
  gemm_bf16_fn fb = level == DSV3_ISA_LEVEL_AVX512 ? dsv3_gemm_bf16_avx512 : level == DSV3_ISA_LEVEL_AVX2 ? dsv3_gemm_bf16_avx2 : dsv3_gemm_bf16_scalar;
  gemm_bf16ab_fn fab = level == DSV3_ISA_LEVEL_AVX512 ? dsv3_gemm_bf16ab_avx512 : level == DSV3_ISA_LEVEL_AVX2 ? dsv3_gemm_bf16ab_avx2 : dsv3_gemm_bf16ab_scalar;
  /* m, n, k: GEMV (m <= 16), edges in every dimension, more than one KC block (k > 384 covers
   * the doubled KC of the pair kernel), k odd for the bf16 pairs, sizes past one MC block */
  static const int cases[][3] = {{1, 37, 300}, {3, 45, 29},  {4, 19, 7},   {13, 37, 19}, {29, 70, 401},
                                 {45, 33, 64}, {7, 100, 35}, {300, 40, 17}, {5, 1, 3},   {12, 32, 32}};
  uint32_t seed = 12345;
  int ok = 1;
  for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (int t = 0; t < 4; t++) {
      const float alpha = (c + t) % 2 ? 0.75f : 1.0f, beta = t % 2 ? 0.5f : 0.0f;
      for (int mode = 0; mode < 3; mode++) /* fp32, bf16, bf16ab */
        ok &= check_case(f, fb, fab, cases[c][0], cases[c][1], cases[c][2], t & 1, t >> 1, alpha, beta, mode, seed++);
    }
  return ok;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static int g_avx512_ok = 0;
static pthread_once_t g_check_once = PTHREAD_ONCE_INIT;

static void avx512_check(void) {
  g_avx512_ok = dsv3_gemm_selfcheck(DSV3_ISA_LEVEL_AVX512);
  if (!g_avx512_ok)
    fprintf(stderr, "dsv3: warning: the AVX-512 GEMM disagrees with the scalar GEMM on this CPU; using AVX2 for GEMM\n");
}

/* The active ISA for GEMM: the global one, except AVX-512 only after it passed the check. */
static int gemm_level(void) {
  const int level = dsv3_isa();
  if (level != DSV3_ISA_LEVEL_AVX512) return level;
  pthread_once(&g_check_once, avx512_check);
  return g_avx512_ok ? level : DSV3_ISA_LEVEL_AVX2;
}

int dsv3_gemm_active_level(void) { return gemm_level(); }

int dsv3_gemm_f32(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int level = gemm_level();
  gemm_f32_fn f = level == DSV3_ISA_LEVEL_AVX512 ? dsv3_gemm_f32_avx512 : level == DSV3_ISA_LEVEL_AVX2 ? dsv3_gemm_f32_avx2 : dsv3_gemm_f32_scalar;
  return f(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int dsv3_gemm_bf16(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                   const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int level = gemm_level();
  gemm_bf16_fn f = level == DSV3_ISA_LEVEL_AVX512 ? dsv3_gemm_bf16_avx512 : level == DSV3_ISA_LEVEL_AVX2 ? dsv3_gemm_bf16_avx2 : dsv3_gemm_bf16_scalar;
  return f(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int dsv3_gemm_bf16ab(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a, int64_t lda,
                     const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int level = gemm_level();
  gemm_bf16ab_fn f = level == DSV3_ISA_LEVEL_AVX512 ? dsv3_gemm_bf16ab_avx512 : level == DSV3_ISA_LEVEL_AVX2 ? dsv3_gemm_bf16ab_avx2 : dsv3_gemm_bf16ab_scalar;
  return f(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* ---- bindings ------------------------------------------------------------------------------ */

static int get_bool(napi_env env, napi_value v, int* out, const char* name) {
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a boolean", name);
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  *out = b;
  return 0;
}

/* A non-negative integer (< 2^31 for sizes), or at least `min` for leading dimensions. */
static int get_dim(napi_env env, napi_value v, int64_t* out, int64_t min, const char* name) {
  double d;
  if (dsv3_double(env, v, &d, name)) return -1;
  if (!(d >= (double)min && d <= 2147483647.0 && d == floor(d))) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be an integer in [%lld, 2^31), got %g", name, (long long)min, d);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

static int need_ld(napi_env env, int64_t ld, int64_t cols, const char* name, const char* what) {
  const int64_t min = cols > 1 ? cols : 1;
  if (ld >= min) return 0;
  char msg[160];
  snprintf(msg, sizeof msg, "dsv3 native: argument '%s' (%lld) must be >= %s (%lld)", name, (long long)ld, what, (long long)min);
  napi_throw_range_error(env, NULL, msg);
  return -1;
}

/* Elements a rows x cols operand with leading dimension ld spans (0 if empty). */
static size_t extent(int64_t rows, int64_t cols, int64_t ld) {
  return rows > 0 && cols > 0 ? (size_t)((rows - 1) * ld + cols) : 0;
}

/* mode 0: gemmF32, 1: gemmBf16 (B bits), 2: gemmBf16Ab (A and B bits) */
static napi_value gemm_common(napi_env env, napi_callback_info info, int mode) {
  const int bf16 = mode != 0;
  GET_ARGS(env, info, 13);
  int ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  double alpha, beta;
  size_t la, lb, lc;
  if (get_bool(env, argv[0], &ta, "transA") || get_bool(env, argv[1], &tb, "transB") ||
      get_dim(env, argv[2], &m, 0, "m") || get_dim(env, argv[3], &n, 0, "n") || get_dim(env, argv[4], &k, 0, "k") ||
      dsv3_double(env, argv[5], &alpha, "alpha") || get_dim(env, argv[7], &lda, 1, "lda") ||
      get_dim(env, argv[9], &ldb, 1, "ldb") || dsv3_double(env, argv[10], &beta, "beta") ||
      get_dim(env, argv[12], &ldc, 1, "ldc"))
    return NULL;
  /* a NULL data pointer is legitimate for an empty typed array: failure = pending exception */
  bool pending = false;
  const void* a = mode == 2 ? (const void*)dsv3_u16(env, argv[6], &la, "a") : (const void*)dsv3_f32(env, argv[6], &la, "a");
  if (!a && (napi_is_exception_pending(env, &pending), pending)) return NULL;
  const void* b = bf16 ? (const void*)dsv3_u16(env, argv[8], &lb, "b") : (const void*)dsv3_f32(env, argv[8], &lb, "b");
  if (!b && (napi_is_exception_pending(env, &pending), pending)) return NULL;
  float* c = dsv3_f32(env, argv[11], &lc, "c");
  if (!c && (napi_is_exception_pending(env, &pending), pending)) return NULL;
  /* A is [m,k] or (transA) [k,m]; B is [k,n] or (transB) [n,k]; C is [m,n] */
  const int64_t arows = ta ? k : m, acols = ta ? m : k, brows = tb ? n : k, bcols = tb ? k : n;
  if (need_ld(env, lda, acols, "lda", ta ? "m" : "k") || need_ld(env, ldb, bcols, "ldb", tb ? "k" : "n") ||
      need_ld(env, ldc, n, "ldc", "n"))
    return NULL;
  const int reads = m > 0 && n > 0 && k > 0;
  if (dsv3_need(env, la, reads ? extent(arows, acols, lda) : 0, "a") ||
      dsv3_need(env, lb, reads ? extent(brows, bcols, ldb) : 0, "b") || dsv3_need(env, lc, extent(m, n, ldc), "c"))
    return NULL;
  const int rc = mode == 2 ? dsv3_gemm_bf16ab(ta, tb, m, n, k, (float)alpha, (const uint16_t*)a, lda, (const uint16_t*)b, ldb, (float)beta, c, ldc)
                 : bf16   ? dsv3_gemm_bf16(ta, tb, m, n, k, (float)alpha, (const float*)a, lda, (const uint16_t*)b, ldb, (float)beta, c, ldc)
                          : dsv3_gemm_f32(ta, tb, m, n, k, (float)alpha, (const float*)a, lda, (const float*)b, ldb, (float)beta, c, ldc);
  if (rc) napi_throw_error(env, NULL, "dsv3 native: gemm could not allocate its packing buffers");
  return NULL;
}

static napi_value js_gemm_f32(napi_env env, napi_callback_info info) { return gemm_common(env, info, 0); }
static napi_value js_gemm_bf16(napi_env env, napi_callback_info info) { return gemm_common(env, info, 1); }
static napi_value js_gemm_bf16ab(napi_env env, napi_callback_info info) { return gemm_common(env, info, 2); }

static napi_value js_gemm_selfcheck(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  char buf[16] = {0};
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], buf, sizeof buf, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "dsv3 native: gemmSelfCheck expects an ISA name");
    return NULL;
  }
  const int level = !strcmp(buf, "avx512") ? DSV3_ISA_LEVEL_AVX512 : !strcmp(buf, "avx2") ? DSV3_ISA_LEVEL_AVX2 : DSV3_ISA_LEVEL_SCALAR;
  const int have = level == DSV3_ISA_LEVEL_AVX512 ? dsv3_has_avx512() : level == DSV3_ISA_LEVEL_AVX2 ? dsv3_has_avx2_fma() : 1;
  napi_value r;
  napi_get_boolean(env, have && dsv3_gemm_selfcheck(level), &r);
  return r;
}

/* gemmAllowDpbf16(on: boolean) -> boolean (the previous setting). Test hook: false makes the
 * AVX-512 bf16 GEMMs take the widening path (as on an AVX-512 CPU without avx512_bf16). */
static napi_value js_gemm_allow_dpbf16(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int on;
  if (get_bool(env, argv[0], &on, "on")) return NULL;
  napi_value r;
  napi_get_boolean(env, dsv3_gemm_allow_dpbf16, &r);
  dsv3_gemm_allow_dpbf16 = on;
  return r;
}

/* gemmBf16RoundPrepass(on: boolean) -> boolean (the previous setting). Test / benchmark hook:
 * false makes the bf16 GEMMs without VDPBF16PS round A while packing it instead of once
 * beforehand where the GEMM chooses that (the default; the two give the same numbers). */
static napi_value js_gemm_round_prepass(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int on;
  if (get_bool(env, argv[0], &on, "on")) return NULL;
  napi_value r;
  napi_get_boolean(env, dsv3_gemm_round_prepass, &r);
  dsv3_gemm_round_prepass = on;
  return r;
}

void dsv3_register_gemm(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "gemmAllowDpbf16", js_gemm_allow_dpbf16);
  dsv3_export(env, exports, "gemmBf16RoundPrepass", js_gemm_round_prepass);
  dsv3_export(env, exports, "gemmF32", js_gemm_f32);
  dsv3_export(env, exports, "gemmBf16", js_gemm_bf16);
  dsv3_export(env, exports, "gemmBf16Ab", js_gemm_bf16ab);
  dsv3_export(env, exports, "gemmSelfCheck", js_gemm_selfcheck);
}
