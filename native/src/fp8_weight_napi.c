/* FP8-weight linear: ISA dispatch and the Node-API bindings
 *   linearFp8(m, n, k, x, codes, scaleInv, beta, y)
 *     x Float32Array [m,k], codes Uint8Array [n,k] (E4M3FN), scaleInv Float32Array
 *     [ceil(n/128), ceil(k/128)], y Float32Array [m,n]; semantics of Kernels.linearFp8
 *     (src/engine/kernels.ts) and fp8_weight.h. Sizes are checked before any memory is touched:
 *     TypeError for a wrong type, RangeError naming the argument for a bad size.
 *   fp8SetGemvMaxM(n) -> previous value   (test hook: largest m taking the GEMV path, 0..8)
 *   fp8SetVbmi(bool) -> previous value    (test hook: AVX-512 VBMI table decode allowed) */
#include <math.h>
#include "cpu.h"
#include "fp8_weight.h"
#include "napi_util.h"

int dsv3_fp8_gemv_max_m = 8;
int dsv3_fp8_allow_vbmi = 1;

int dsv3_linear_fp8(int64_t m, int64_t n, int64_t k, const float* x, const uint8_t* codes, const float* scale_inv,
                    float beta, float* y) {
  const int level = dsv3_isa();
  if (level == DSV3_ISA_LEVEL_AVX512) return dsv3_linear_fp8_avx512(m, n, k, x, codes, scale_inv, beta, y);
  if (level == DSV3_ISA_LEVEL_AVX2) return dsv3_linear_fp8_avx2(m, n, k, x, codes, scale_inv, beta, y);
  return dsv3_linear_fp8_scalar(m, n, k, x, codes, scale_inv, beta, y);
}

/* A size argument: an integer in [0, 2^31). */
static int get_dim(napi_env env, napi_value v, int64_t* out, const char* name) {
  double d;
  if (dsv3_double(env, v, &d, name)) return -1;
  if (!(d >= 0.0 && d <= 2147483647.0 && d == floor(d))) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be an integer in [0, 2^31), got %g", name, d);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

/* a*b as an element count, RangeError if it cannot be addressed. */
static int product(napi_env env, int64_t a, int64_t b, size_t* out, const char* name) {
  if (a != 0 && b > (int64_t)(SIZE_MAX / 8) / a) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' would need %lld x %lld elements", name, (long long)a, (long long)b);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  *out = (size_t)(a * b);
  return 0;
}

static int pending(napi_env env) {
  bool p = false;
  napi_is_exception_pending(env, &p);
  return p;
}

/* The operands of linearFp8 / linearFp8T: m, n, k (argv[0..2]), x (argv[3]), codes (argv[4]),
 * scaleInv (argv[5]) and y (argv[yi]), each checked against its size: x [m,k], y [m,n], and the
 * codes of W [n,k] (transposed: [k,n]) with scaleInv [ceil(rows/128), ceil(cols/128)] of them.
 * Returns 0, or -1 with a JS exception pending. A NULL pointer with no pending exception is an
 * empty array (never read: its size is 0). */
typedef struct {
  int64_t m, n, k;
  const float* x;
  const uint8_t* codes;
  const float* s;
  float* y;
} fp8_linear_args;

static int fp8_linear_args_get(napi_env env, napi_value* argv, int yi, int transposed, fp8_linear_args* a) {
  size_t lx = 0, lw = 0, ls = 0, ly = 0, nx = 0, nw = 0, ns = 0, ny = 0;
  if (get_dim(env, argv[0], &a->m, "m") || get_dim(env, argv[1], &a->n, "n") || get_dim(env, argv[2], &a->k, "k")) return -1;
  a->x = dsv3_f32(env, argv[3], &lx, "x");
  if (!a->x && pending(env)) return -1;
  a->codes = dsv3_u8(env, argv[4], &lw, "codes");
  if (!a->codes && pending(env)) return -1;
  a->s = dsv3_f32(env, argv[5], &ls, "scaleInv");
  if (!a->s && pending(env)) return -1;
  a->y = dsv3_f32(env, argv[yi], &ly, "y");
  if (!a->y && pending(env)) return -1;
  const int64_t rows = transposed ? a->k : a->n, cols = transposed ? a->n : a->k;
  if (product(env, a->m, a->k, &nx, "x") || product(env, rows, cols, &nw, "codes") ||
      product(env, (rows + 127) / 128, (cols + 127) / 128, &ns, "scaleInv") || product(env, a->m, a->n, &ny, "y"))
    return -1;
  if (dsv3_need(env, lx, nx, "x") || dsv3_need(env, lw, nw, "codes") || dsv3_need(env, ls, ns, "scaleInv") ||
      dsv3_need(env, ly, ny, "y"))
    return -1;
  return 0;
}

static napi_value js_linear_fp8(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 8);
  fp8_linear_args a;
  double beta;
  if (fp8_linear_args_get(env, argv, 7, 0, &a) || dsv3_double(env, argv[6], &beta, "beta")) return NULL;
  if (dsv3_linear_fp8(a.m, a.n, a.k, a.x, a.codes, a.s, (float)beta, a.y))
    napi_throw_error(env, NULL, "dsv3 native: linearFp8 could not allocate its scratch buffers");
  return NULL;
}

/* linearFp8T(m, n, k, x, codes, scaleInv, y): y[m,n] = x[m,k] W, W [k,n] = codes [k][n] with
 * scaleInv [ceil(k/128), ceil(n/128)] (Kernels.linearFp8T); y overwritten. */
static napi_value js_linear_fp8_t(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 7);
  fp8_linear_args a;
  if (fp8_linear_args_get(env, argv, 6, 1, &a)) return NULL;
  const int level = dsv3_isa();
  if (level == DSV3_ISA_LEVEL_AVX512) dsv3_linear_fp8_t_avx512(a.m, a.n, a.k, a.x, a.codes, a.s, a.y);
  else if (level == DSV3_ISA_LEVEL_AVX2) dsv3_linear_fp8_t_avx2(a.m, a.n, a.k, a.x, a.codes, a.s, a.y);
  else dsv3_linear_fp8_t_scalar(a.m, a.n, a.k, a.x, a.codes, a.s, a.y);
  return NULL;
}

static napi_value js_set_gemv_max_m(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int64_t v;
  if (get_dim(env, argv[0], &v, "gemvMaxM")) return NULL;
  napi_value r;
  napi_create_int32(env, dsv3_fp8_gemv_max_m, &r);
  dsv3_fp8_gemv_max_m = v > 8 ? 8 : (int)v;
  return r;
}

static napi_value js_set_vbmi(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  bool b;
  if (napi_get_value_bool(env, argv[0], &b) != napi_ok) {
    napi_throw_type_error(env, NULL, "dsv3 native: argument 'allow' must be a boolean");
    return NULL;
  }
  napi_value r;
  napi_get_boolean(env, dsv3_fp8_allow_vbmi != 0, &r);
  dsv3_fp8_allow_vbmi = b;
  return r;
}

void dsv3_register_fp8_weight(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "linearFp8", js_linear_fp8);
  dsv3_export(env, exports, "linearFp8T", js_linear_fp8_t);
  dsv3_export(env, exports, "fp8SetGemvMaxM", js_set_gemv_max_m);
  dsv3_export(env, exports, "fp8SetVbmi", js_set_vbmi);
}
