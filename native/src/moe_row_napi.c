/* Node-API bindings of the one-token MoE kernel (moe_row.h, isa/moe_row.c):
 *   moeRowBf16(D, inters: Int32Array, alphas: Float32Array, weights: Uint16Array[3E],
 *              x: Float32Array, h: Float32Array, scratch: Float32Array)
 *   moeRowFp8(D, inters, alphas, codes: Uint8Array[3E], scales: Float32Array[3E], x, h, scratch)
 * E = inters.length experts; expert e's weights are entries 3e (gate [I_e, D]), 3e+1 (up
 * [I_e, D]) and 3e+2 (down [D, I_e]); FP8 scales are [ceil(rows/128), ceil(cols/128)]. h += the
 * experts' outputs (moe_row.h). Short buffers, a bad count or h overlapping x or scratch are a
 * RangeError naming the argument; moeRowScratch(D, S) gives the scratch length. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "cpu.h"
#include "fp8_weight.h"
#include "fused.h"
#include "gemm.h"
#include "moe_row.h"
#include "napi_util.h"

static int range_error(napi_env env, const char* msg) {
  napi_throw_range_error(env, NULL, msg);
  return -1;
}

/* element i of the JS array `arr` as a typed array of `type` with >= need elements */
static void* elem(napi_env env, napi_value arr, uint32_t i, napi_typedarray_type type, const char* name, size_t need) {
  napi_value v;
  char label[48];
  snprintf(label, sizeof label, "%s[%u]", name, i);
  if (napi_get_element(env, arr, i, &v) != napi_ok) return NULL;
  size_t len = 0;
  void* p = dsv3_typed(env, v, type, &len, label);
  if (!p || dsv3_need(env, len, need, label)) return NULL;
  return p;
}

static int overlaps(const void* a, size_t na, const void* b, size_t nb) {
  const char *pa = (const char*)a, *pb = (const char*)b;
  return pa < pb + nb && pb < pa + na;
}

static napi_value moe_row_common(napi_env env, napi_callback_info info, int fp8) {
  GET_ARGS(env, info, fp8 ? 8 : 7);
  int64_t D;
  if (dsv3_int(env, argv[0], &D, "D")) return NULL;
  if (D < 1 || D > ((int64_t)1 << 30)) {
    range_error(env, "dsv3 native: moeRow: argument 'D' must be in [1, 2^30]");
    return NULL;
  }
  size_t E = 0, na = 0;
  const int32_t* inters = dsv3_i32(env, argv[1], &E, "inters");
  if (!inters) return NULL;
  if (E < 1 || E > MOE_ROW_MAX) {
    char msg[128];
    snprintf(msg, sizeof msg, "dsv3 native: moeRow: argument 'inters' must hold 1..%d widths, got %zu", MOE_ROW_MAX, E);
    range_error(env, msg);
    return NULL;
  }
  const float* alphas = dsv3_f32(env, argv[2], &na, "alphas");
  if (!alphas || dsv3_need(env, na, E, "alphas")) return NULL;
  int64_t inter[MOE_ROW_MAX], S = 0;
  for (size_t e = 0; e < E; e++) {
    if (inters[e] < 1) {
      char msg[128];
      snprintf(msg, sizeof msg, "dsv3 native: moeRow: inters[%zu] = %d, expected >= 1", e, (int)inters[e]);
      range_error(env, msg);
      return NULL;
    }
    inter[e] = inters[e];
    S += inter[e];
  }
  const uint16_t* bits[3 * MOE_ROW_MAX];
  const uint8_t* codes[3 * MOE_ROW_MAX];
  const float* scales[3 * MOE_ROW_MAX];
  for (size_t e = 0; e < E; e++)
    for (int t = 0; t < 3; t++) {
      const int64_t rows = t < 2 ? inter[e] : D, cols = t < 2 ? D : inter[e];
      const uint32_t i = (uint32_t)(3 * e + t);
      if (!fp8) {
        if (!(bits[i] = (const uint16_t*)elem(env, argv[3], i, napi_uint16_array, "weights", (size_t)(rows * cols)))) return NULL;
      } else {
        const size_t ns = (size_t)(((rows + 127) / 128) * ((cols + 127) / 128));
        if (!(codes[i] = (const uint8_t*)elem(env, argv[3], i, napi_uint8_array, "codes", (size_t)(rows * cols)))) return NULL;
        if (!(scales[i] = (const float*)elem(env, argv[4], i, napi_float32_array, "scales", ns))) return NULL;
      }
    }
  const int b = fp8 ? 5 : 4;
  size_t lx = 0, lh = 0, ls = 0;
  const float* x = dsv3_f32(env, argv[b], &lx, "x");
  if (!x || dsv3_need(env, lx, (size_t)D, "x")) return NULL;
  float* h = dsv3_f32(env, argv[b + 1], &lh, "h");
  if (!h || dsv3_need(env, lh, (size_t)D, "h")) return NULL;
  float* scratch = dsv3_f32(env, argv[b + 2], &ls, "scratch");
  const int64_t need = dsv3_moe_row_scratch(D, S);
  if (!scratch || dsv3_need(env, ls, (size_t)need, "scratch")) return NULL;
  if (overlaps(h, (size_t)D * 4, x, (size_t)D * 4) || overlaps(h, (size_t)D * 4, scratch, (size_t)need * 4) ||
      overlaps(x, (size_t)D * 4, scratch, (size_t)need * 4)) {
    range_error(env, "dsv3 native: moeRow: 'h', 'x' and 'scratch' must not overlap");
    return NULL;
  }
  dsv3_moe_row_args a;
  memset(&a, 0, sizeof a);
  a.fp8 = fp8;
  a.E = (int)E;
  a.D = D;
  a.inter = inter;
  a.alpha = alphas;
  a.bits = bits;
  a.codes = codes;
  a.scales = scales;
  a.x = x;
  a.h = h;
  a.scratch = scratch;
  /* the ISA copies the separate calls would use: gemmBf16's level for bf16 weights (its
   * AVX-512 self-check), dsv3_isa() for linearFp8 and siluMul */
  const int level = fp8 ? dsv3_isa() : dsv3_gemm_active_level();
  a.silu = SELECT_ISA(dsv3_silu_mul);
  int rc;
  if (level == DSV3_ISA_LEVEL_AVX512) {
    a.dp = !fp8 && dsv3_gemm_allow_dpbf16 && dsv3_has_avx512_bf16();
    a.vbmi = fp8 && dsv3_fp8_allow_vbmi && dsv3_has_avx512_vbmi();
    rc = dsv3_moe_row_avx512(&a);
  } else if (level == DSV3_ISA_LEVEL_AVX2) {
    rc = dsv3_moe_row_avx2(&a);
  } else {
    rc = dsv3_moe_row_scalar(&a);
  }
  if (rc) napi_throw_error(env, NULL, "dsv3 native: moeRow could not allocate its scratch buffers");
  return NULL;
}

static napi_value js_moe_row_bf16(napi_env env, napi_callback_info info) { return moe_row_common(env, info, 0); }
static napi_value js_moe_row_fp8(napi_env env, napi_callback_info info) { return moe_row_common(env, info, 1); }

/* moeRowScratch(D, S) -> float32 elements of scratch for hidden D and S = sum of the widths */
static napi_value js_moe_row_scratch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int64_t D, S;
  if (dsv3_int(env, argv[0], &D, "D") || dsv3_int(env, argv[1], &S, "S")) return NULL;
  napi_value r;
  napi_create_double(env, (double)dsv3_moe_row_scratch(D, S), &r);
  return r;
}

void dsv3_register_moe_row(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "moeRowBf16", js_moe_row_bf16);
  dsv3_export(env, exports, "moeRowFp8", js_moe_row_fp8);
  dsv3_export(env, exports, "moeRowScratch", js_moe_row_scratch);
}
