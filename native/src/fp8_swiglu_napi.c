/* Node-API binding of the FP8 MoE experts' SwiGLU backward with its operands (DeepSeek-V3 §3.3.3:
 * the SwiGLU inputs are cached in FP8; src/engine/ops/fp8-training-grouped.ts), with the JS
 * signature of the `Kernels` interface (src/engine/kernels.ts):
 *   fp8SwigluBackwardDual(gCodes, gScales, uCodes, uScales, dh, rows, cols, offsets|null,
 *                         dgCodes, dgScales, dgColCodes, dgColScales,
 *                         duCodes, duScales, duColCodes, duColScales)
 * = G, U = fp8Dequant of the cached 1x128-tile copies; dG, dU = siluMulBackward(G, U, dH); then
 * fp8QuantTilesDual of dG and of dU (1x128 tiles for Dgrad, 128x1 tiles restarting at each
 * segment start for Wgrad). Each task is one 128-row group of one segment and runs exactly those
 * kernels on it (dsv3_fp8_quant_dequant, dsv3_silu_mul_bwd: elementwise; dsv3_fp8_quant_dual:
 * per row and per column of the group), so the bits are those of the separate calls, while
 * G, U, dG and dU (float32) stay in a thread-local scratch of 4 x 128 x cols floats instead of
 * going through memory. Lengths are checked before anything runs (RangeError naming the argument).
 * And the forward's counterpart:
 *   fp8SiluMulQuant(g, u, rows, cols, hCodes, hScales, gCodes|null, gScales|null, uCodes|null, uScales|null)
 * = H = siluMul(G, U) quantised per 1x128 tile (fp8QuantTiles1x128: the down projection's Fprop
 * operand), and the FP8 copies of G and U (when given; cached for the backward), per row range:
 * the same bits as siluMul and the three quantisations, H never written out in float32. */
#include <stdlib.h>
#include "fp8_quant.h"
#include "fused.h"
#include "fused_napi.h"
#include "fp8_segments_napi.h"

typedef struct {
  const uint8_t *gc, *uc;
  const float *gs, *us, *dh;
  int64_t cols;
  const int64_t *task_row, *task_n, *task_so;
  uint8_t *dgc, *dgcc, *duc, *ducc;
  float *dgs, *dgcs, *dus, *ducs;
  volatile int fail;
} sw_job;

static void sw_task(void* ctx, int t, int thread) {
  (void)thread;
  sw_job* j = (sw_job*)ctx;
  const int64_t r0 = j->task_row[t], n = j->task_n[t], cols = j->cols, nt = (cols + 127) / 128, so = j->task_so[t];
  float* const buf = f8s_scratch((size_t)(4 * n * cols) * sizeof(float));
  if (!buf) {
    j->fail = 1;
    return;
  }
  float *g = buf, *u = g + n * cols, *dg = u + n * cols, *du = dg + n * cols;
  SELECT_ISA(dsv3_fp8_quant_dequant)(j->gc + r0 * cols, j->gs + r0 * nt, 0, n, cols, 1, g);
  SELECT_ISA(dsv3_fp8_quant_dequant)(j->uc + r0 * cols, j->us + r0 * nt, 0, n, cols, 1, u);
  SELECT_ISA(dsv3_silu_mul_bwd)(g, u, j->dh + r0 * cols, dg, du, n * cols);
  for (int64_t c0 = 0; c0 < cols; c0 += FP8_QUANT_CHUNK) {
    const int64_t c1 = c0 + FP8_QUANT_CHUNK < cols ? c0 + FP8_QUANT_CHUNK : cols;
    SELECT_ISA(dsv3_fp8_quant_dual)(dg, n, c0, c1, cols, j->dgc + r0 * cols, j->dgs + r0 * nt, j->dgcc + r0 * cols, j->dgcs + so);
    SELECT_ISA(dsv3_fp8_quant_dual)(du, n, c0, c1, cols, j->duc + r0 * cols, j->dus + r0 * nt, j->ducc + r0 * cols, j->ducs + so);
  }
}

/* a Uint8Array (u8) or Float32Array argument with at least `need` elements */
static int sw_arg(napi_env env, napi_value v, int u8, const char* name, size_t need, void** out) {
  bool is = false;
  napi_typedarray_type type;
  size_t len, off;
  void* data = NULL;
  napi_value ab;
  static float empty[16];
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is || napi_get_typedarray_info(env, v, &type, &len, &data, &ab, &off) != napi_ok ||
      type != (u8 ? napi_uint8_array : napi_float32_array)) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a %s", name, u8 ? "Uint8Array" : "Float32Array");
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  if (dsv3_need(env, len, need, name)) return -1;
  *out = data ? data : (void*)empty;
  return 0;
}

static napi_value js_swiglu_bwd_dual(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 16);
  int64_t rows, cols;
  if (fz_dims(env, argv[5], "rows", argv[6], "cols", &rows, &cols)) return NULL;
  int32_t one[2];
  const int32_t* starts;
  int64_t nseg, ntask, nscale;
  if (f8s_segments(env, argv[7], rows, cols, one, &starts, &nseg, &ntask, &nscale)) return NULL;
  const size_t dense = (size_t)(rows * cols), ns = (size_t)(rows * ((cols + 127) / 128));
  static const char* names[16] = {"gCodes", "gScales", "uCodes", "uScales", "dh", "", "", "", "dgCodes", "dgScales",
                                  "dgColCodes", "dgColScales", "duCodes", "duScales", "duColCodes", "duColScales"};
  void* p[16] = {0};
  for (int i = 0; i < 16; i++) {
    if (i >= 5 && i <= 7) continue;
    const int u8 = i == 0 || i == 2 || i == 8 || i == 10 || i == 12 || i == 14;
    const size_t need = u8 || i == 4 ? dense : (i == 11 || i == 15) ? (size_t)nscale : ns;
    if (sw_arg(env, argv[i], u8, names[i], need, &p[i])) return NULL;
  }
  if (dense == 0 || ntask == 0) return NULL;
  int64_t* plan = (int64_t*)malloc((size_t)ntask * 3 * sizeof(int64_t));
  if (!plan) {
    napi_throw_error(env, NULL, "dsv3 native: fp8SwigluBackwardDual: out of memory");
    return NULL;
  }
  sw_job j = {(const uint8_t*)p[0], (const uint8_t*)p[2], (const float*)p[1], (const float*)p[3], (const float*)p[4], cols,
              plan, plan + ntask, plan + 2 * ntask, (uint8_t*)p[8], (uint8_t*)p[10], (uint8_t*)p[12], (uint8_t*)p[14],
              (float*)p[9], (float*)p[11], (float*)p[13], (float*)p[15], 0};
  int64_t t = 0, so = 0;
  for (int64_t e = 0; e < nseg; e++)
    for (int64_t r = starts[e]; r < starts[e + 1]; r += 128, t++, so += cols) {
      plan[t] = r;
      plan[ntask + t] = starts[e + 1] - r < 128 ? starts[e + 1] - r : 128;
      plan[2 * ntask + t] = so;
    }
  const int th = dsv3_threads();
  if (th > 1 && (int64_t)dense >= FZ_PAR_MIN && ntask > 1) dsv3_parallel_for((int)ntask, sw_task, &j);
  else
    for (t = 0; t < ntask; t++) sw_task(&j, (int)t, 0);
  free(plan);
  if (j.fail) napi_throw_error(env, NULL, "dsv3 native: fp8SwigluBackwardDual: out of memory");
  return NULL;
}

typedef struct {
  const float *g, *u;
  int64_t rows, cols, per;
  uint8_t *hc, *gc, *uc;
  float *hs, *gs, *us;
  volatile int fail;
} sf_job;

static void sf_task(void* ctx, int t, int thread) {
  (void)thread;
  sf_job* j = (sf_job*)ctx;
  const int64_t r0 = (int64_t)t * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows, cols = j->cols;
  if (r0 >= r1) return;
  float* const sw_buf = f8s_scratch((size_t)((r1 - r0) * cols) * sizeof(float));
  if (!sw_buf) {
    j->fail = 1;
    return;
  }
  SELECT_ISA(dsv3_silu_mul)(j->g + r0 * cols, j->u + r0 * cols, sw_buf, (r1 - r0) * cols);
  const int64_t nt = (cols + 127) / 128;
  SELECT_ISA(dsv3_fp8_quant_rows)(sw_buf, cols, 0, r1 - r0, cols, j->hc + r0 * cols, j->hs + r0 * nt, NULL);
  if (j->gc) SELECT_ISA(dsv3_fp8_quant_rows)(j->g, cols, r0, r1, cols, j->gc, j->gs, NULL);
  if (j->uc) SELECT_ISA(dsv3_fp8_quant_rows)(j->u, cols, r0, r1, cols, j->uc, j->us, NULL);
}

static napi_value js_silu_mul_quant(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 10);
  sf_job j = {0};
  if (fz_dims(env, argv[2], "rows", argv[3], "cols", &j.rows, &j.cols)) return NULL;
  const size_t dense = (size_t)(j.rows * j.cols), ns = (size_t)(j.rows * ((j.cols + 127) / 128));
  void *g, *u, *hc, *hs, *gc = NULL, *gs = NULL, *uc = NULL, *us = NULL;
  if (sw_arg(env, argv[0], 0, "g", dense, &g) || sw_arg(env, argv[1], 0, "u", dense, &u) ||
      sw_arg(env, argv[4], 1, "hCodes", dense, &hc) || sw_arg(env, argv[5], 0, "hScales", ns, &hs))
    return NULL;
  for (int q = 0; q < 2; q++) { /* (gCodes, gScales), (uCodes, uScales): both or neither */
    napi_valuetype a, b;
    if (napi_typeof(env, argv[6 + 2 * q], &a) != napi_ok || napi_typeof(env, argv[7 + 2 * q], &b) != napi_ok) return NULL;
    const int na = a == napi_null || a == napi_undefined, nb = b == napi_null || b == napi_undefined;
    if (na != nb) {
      napi_throw_type_error(env, NULL, q ? "dsv3 native: 'uCodes' and 'uScales' must be given both or neither"
                                         : "dsv3 native: 'gCodes' and 'gScales' must be given both or neither");
      return NULL;
    }
    if (na) continue;
    if (sw_arg(env, argv[6 + 2 * q], 1, q ? "uCodes" : "gCodes", dense, q ? &uc : &gc) ||
        sw_arg(env, argv[7 + 2 * q], 0, q ? "uScales" : "gScales", ns, q ? &us : &gs))
      return NULL;
  }
  if (dense == 0) return NULL;
  j.g = (const float*)g;
  j.u = (const float*)u;
  j.hc = (uint8_t*)hc;
  j.hs = (float*)hs;
  j.gc = (uint8_t*)gc;
  j.gs = (float*)gs;
  j.uc = (uint8_t*)uc;
  j.us = (float*)us;
  const int th = dsv3_threads();
  /* row ranges of ~16K elements (the scratch stays in L1/L2), at least one row */
  j.per = FZ_TASK_MIN / j.cols > 0 ? FZ_TASK_MIN / j.cols : 1;
  const int64_t ntask = (j.rows + j.per - 1) / j.per;
  if (th > 1 && (int64_t)dense >= FZ_PAR_MIN && ntask > 1) dsv3_parallel_for((int)ntask, sf_task, &j);
  else
    for (int64_t t = 0; t < ntask; t++) sf_task(&j, (int)t, 0);
  if (j.fail) napi_throw_error(env, NULL, "dsv3 native: fp8SiluMulQuant: out of memory");
  return NULL;
}

void dsv3_register_fp8_swiglu(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "fp8SwigluBackwardDual", js_swiglu_bwd_dual);
  dsv3_export(env, exports, "fp8SiluMulQuant", js_silu_mul_quant);
}
