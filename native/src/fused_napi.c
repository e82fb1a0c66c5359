/* Node-API bindings of the fused row kernels (isa/rows.c): softmax, softmaxBackward,
 * logSoftmax, logSoftmaxBackward, rmsNorm, rmsNormBackward, rmsNormBf16, crossEntropy,
 * crossEntropyBackward, with exactly the JS signatures of the `Kernels` interface
 * (src/engine/kernels.ts). Sizes are checked before any kernel runs: a buffer that is too
 * short is a RangeError naming the argument; a cross-entropy target >= vocab is a RangeError
 * naming the row and the target. */
#include <math.h>
#include <stdlib.h>
#include "cpu.h"
#include "fused.h"
#include "fused_napi.h"

/* ---- bindings ------------------------------------------------------------------------------ */

/* (in, out, rows, cols) with both [rows, cols]: softmax, logSoftmax */
static napi_value rows_unary(napi_env env, napi_callback_info info, const char* in_name, const char* out_name,
                             void (*const fns[3])(const dsv3_rows_args*, int64_t, int64_t, float*)) {
  GET_ARGS(env, info, 4);
  dsv3_rows_args a = {0};
  float *x, *y;
  if (fz_dims(env, argv[2], "rows", argv[3], "cols", &a.rows, &a.cols)) return NULL;
  const size_t n = (size_t)(a.rows * a.cols);
  if (fz_f32(env, argv[0], in_name, n, &x) || fz_f32(env, argv[1], out_name, n, &y)) return NULL;
  a.x = x;
  a.out = y;
  fz_run_rows(FZ_PICK(fns), &a);
  return NULL;
}

/* (y, dy, dx, rows, cols): softmaxBackward, logSoftmaxBackward */
static napi_value rows_backward(napi_env env, napi_callback_info info,
                                void (*const fns[3])(const dsv3_rows_args*, int64_t, int64_t, float*)) {
  GET_ARGS(env, info, 5);
  dsv3_rows_args a = {0};
  float *y, *dy, *dx;
  if (fz_dims(env, argv[3], "rows", argv[4], "cols", &a.rows, &a.cols)) return NULL;
  const size_t n = (size_t)(a.rows * a.cols);
  if (fz_f32(env, argv[0], "y", n, &y) || fz_f32(env, argv[1], "dy", n, &dy) ||
      fz_f32(env, argv[2], "dx", n, &dx))
    return NULL;
  a.y = y;
  a.dy = dy;
  a.out = dx;
  fz_run_rows(FZ_PICK(fns), &a);
  return NULL;
}

#define ROWS_FNS(name) {name##_avx512, name##_avx2, name##_scalar}
static void (*const k_softmax[3])(const dsv3_rows_args*, int64_t, int64_t, float*) = ROWS_FNS(dsv3_softmax_rows);
static void (*const k_softmax_bwd[3])(const dsv3_rows_args*, int64_t, int64_t, float*) = ROWS_FNS(dsv3_softmax_bwd_rows);
static void (*const k_log_softmax[3])(const dsv3_rows_args*, int64_t, int64_t, float*) = ROWS_FNS(dsv3_log_softmax_rows);
static void (*const k_log_softmax_bwd[3])(const dsv3_rows_args*, int64_t, int64_t, float*) = ROWS_FNS(dsv3_log_softmax_bwd_rows);

static napi_value js_softmax(napi_env env, napi_callback_info info) { return rows_unary(env, info, "x", "y", k_softmax); }
static napi_value js_log_softmax(napi_env env, napi_callback_info info) { return rows_unary(env, info, "x", "y", k_log_softmax); }
static napi_value js_softmax_bwd(napi_env env, napi_callback_info info) { return rows_backward(env, info, k_softmax_bwd); }
static napi_value js_log_softmax_bwd(napi_env env, napi_callback_info info) { return rows_backward(env, info, k_log_softmax_bwd); }

/* rmsNorm(x, w, y, rstd, rows, cols, eps) and rmsNormBf16(x, w, y, y16, rstd, rows, cols, eps): the
 * latter also writes y16 = bf16 bits of y (RNE) in the same pass. bf16: whether y16 is among the args. */
static napi_value rms_norm(napi_env env, napi_callback_info info, int bf16) {
  const int o = bf16 ? 1 : 0; /* argument shift after y */
  GET_ARGS(env, info, 7 + o);
  dsv3_rows_args a = {0};
  float *x, *w, *y, *rstd;
  uint16_t* y16 = NULL;
  double eps;
  if (fz_dims(env, argv[4 + o], "rows", argv[5 + o], "cols", &a.rows, &a.cols) ||
      dsv3_double(env, argv[6 + o], &eps, "eps"))
    return NULL;
  const size_t n = (size_t)(a.rows * a.cols);
  if (fz_f32(env, argv[0], "x", n, &x) || fz_f32(env, argv[1], "w", (size_t)a.cols, &w) ||
      fz_f32(env, argv[2], "y", n, &y) ||
      (bf16 && fz_typed(env, argv[3], napi_uint16_array, "y16", n, (void**)&y16)) ||
      fz_f32(env, argv[3 + o], "rstd", (size_t)a.rows, &rstd))
    return NULL;
  a.x = x;
  a.w = w;
  a.out = y;
  a.out16 = y16;
  a.rstd_out = rstd;
  a.eps = (float)eps;
  fz_run_rows(SELECT_ISA(dsv3_rms_norm_rows), &a);
  return NULL;
}
static napi_value js_rms_norm(napi_env env, napi_callback_info info) { return rms_norm(env, info, 0); }
static napi_value js_rms_norm_bf16(napi_env env, napi_callback_info info) { return rms_norm(env, info, 1); }

/* rmsNormBackward(x, w, rstd, dy, dx, dw, rows, cols): dw accumulated. Rows are cut into a
 * number of chunks that depends on the shape only; each chunk sums its dw contribution into
 * its own [cols] partial and the partials are added in chunk order in double, so dw does not
 * depend on the thread count or on scheduling. */
static napi_value js_rms_norm_bwd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 8);
  dsv3_rows_args a = {0};
  float *x, *w, *rstd, *dy, *dx, *dw;
  if (fz_dims(env, argv[6], "rows", argv[7], "cols", &a.rows, &a.cols)) return NULL;
  const size_t n = (size_t)(a.rows * a.cols);
  if (fz_f32(env, argv[0], "x", n, &x) || fz_f32(env, argv[1], "w", (size_t)a.cols, &w) ||
      fz_f32(env, argv[2], "rstd", (size_t)a.rows, &rstd) || fz_f32(env, argv[3], "dy", n, &dy) ||
      fz_f32(env, argv[4], "dx", n, &dx) || fz_f32(env, argv[5], "dw", (size_t)a.cols, &dw))
    return NULL;
  if (a.rows == 0 || a.cols == 0) return NULL;
  a.x = x;
  a.w = w;
  a.rstd = rstd;
  a.dy = dy;
  a.out = dx;
  int64_t chunks = (int64_t)n / FZ_TASK_MIN;
  if (chunks > 64) chunks = 64;
  if (chunks > a.rows) chunks = a.rows;
  if (chunks < 1) chunks = 1;
  const int64_t per = (a.rows + chunks - 1) / chunks;
  chunks = (a.rows + per - 1) / per;
  float* part = (float*)malloc((size_t)chunks * (size_t)a.cols * sizeof(float));
  if (!part) {
    napi_throw_error(env, NULL, "dsv3 native: rmsNormBackward: out of memory");
    return NULL;
  }
  fz_rows_job j = {SELECT_ISA(dsv3_rms_norm_bwd_rows), &a, per, part};
  if (chunks == 1 || (int64_t)n < FZ_PAR_MIN) {
    for (int64_t t = 0; t < chunks; t++) fz_rows_task(&j, (int)t, 0);
  } else {
    dsv3_parallel_for((int)chunks, fz_rows_task, &j);
  }
  for (int64_t c = 0; c < a.cols; c++) {
    double s = dw[c];
    for (int64_t t = 0; t < chunks; t++) s += part[t * a.cols + c];
    dw[c] = (float)s;
  }
  free(part);
  return NULL;
}

/* Checks every target before any work: target >= vocab is a RangeError naming row and target. */
static int check_targets(napi_env env, const int32_t* t, int64_t rows, int64_t vocab, const char* fn) {
  for (int64_t r = 0; r < rows; r++) {
    if (t[r] >= vocab) {
      char msg[192];
      snprintf(msg, sizeof msg, "%s: target %d at row %lld is out of range for a vocabulary of %lld", fn, (int)t[r],
               (long long)r, (long long)vocab);
      napi_throw_range_error(env, NULL, msg);
      return -1;
    }
  }
  return 0;
}

static int get_targets(napi_env env, napi_value v, int64_t rows, const int32_t** out) {
  void* p;
  if (fz_typed(env, v, napi_int32_array, "targets", (size_t)rows, &p)) return -1;
  *out = (const int32_t*)p;
  return 0;
}

/* crossEntropy(logits, targets, loss, lse, rows, vocab) */
static napi_value js_cross_entropy(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 6);
  dsv3_rows_args a = {0};
  float *logits, *loss, *lse;
  if (fz_dims(env, argv[4], "rows", argv[5], "vocab", &a.rows, &a.cols)) return NULL;
  if (fz_f32(env, argv[0], "logits", (size_t)(a.rows * a.cols), &logits) ||
      get_targets(env, argv[1], a.rows, &a.targets) || fz_f32(env, argv[2], "loss", (size_t)a.rows, &loss) ||
      fz_f32(env, argv[3], "lse", (size_t)a.rows, &lse) ||
      check_targets(env, a.targets, a.rows, a.cols, "crossEntropy"))
    return NULL;
  a.x = logits;
  a.loss_out = loss;
  a.lse_out = lse;
  fz_run_rows(SELECT_ISA(dsv3_cross_entropy_rows), &a);
  return NULL;
}

/* crossEntropyBackward(logits, targets, lse, dloss, dlogits, rows, vocab) */
static napi_value js_cross_entropy_bwd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 7);
  dsv3_rows_args a = {0};
  float *logits, *lse, *dloss, *dlogits;
  if (fz_dims(env, argv[5], "rows", argv[6], "vocab", &a.rows, &a.cols)) return NULL;
  const size_t n = (size_t)(a.rows * a.cols);
  if (fz_f32(env, argv[0], "logits", n, &logits) || get_targets(env, argv[1], a.rows, &a.targets) ||
      fz_f32(env, argv[2], "lse", (size_t)a.rows, &lse) ||
      fz_f32(env, argv[3], "dloss", (size_t)a.rows, &dloss) || fz_f32(env, argv[4], "dlogits", n, &dlogits) ||
      check_targets(env, a.targets, a.rows, a.cols, "crossEntropyBackward"))
    return NULL;
  a.x = logits;
  a.lse = lse;
  a.dloss = dloss;
  a.out = dlogits;
  fz_run_rows(SELECT_ISA(dsv3_cross_entropy_bwd_rows), &a);
  return NULL;
}

/* crossEntropyGradBf16(logits, targets, loss, lse, g16, rows, vocab, ldg): crossEntropy, and the
 * bf16 bits of its gradient with dloss 1 (softmax - onehot) in g16 rows ldg apart (padding not
 * written); logits are only read. */
static napi_value js_cross_entropy_grad_bf16(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 8);
  dsv3_rows_args a = {0};
  float *logits, *loss, *lse;
  uint16_t* g16;
  int64_t ldg;
  if (fz_dims(env, argv[5], "rows", argv[6], "vocab", &a.rows, &a.cols) || fz_count(env, argv[7], "ldg", &ldg)) return NULL;
  if (ldg < a.cols) {
    napi_throw_range_error(env, NULL, "dsv3 native: crossEntropyGradBf16: ldg must be >= vocab");
    return NULL;
  }
  const size_t need16 = a.rows > 0 && a.cols > 0 ? (size_t)((a.rows - 1) * ldg + a.cols) : 0;
  if (fz_f32(env, argv[0], "logits", (size_t)(a.rows * a.cols), &logits) ||
      get_targets(env, argv[1], a.rows, &a.targets) || fz_f32(env, argv[2], "loss", (size_t)a.rows, &loss) ||
      fz_f32(env, argv[3], "lse", (size_t)a.rows, &lse) ||
      fz_typed(env, argv[4], napi_uint16_array, "g16", need16, (void**)&g16) ||
      check_targets(env, a.targets, a.rows, a.cols, "crossEntropyGradBf16"))
    return NULL;
  a.x = logits;
  a.loss_out = loss;
  a.lse_out = lse;
  a.out16 = g16;
  a.ld16 = ldg;
  fz_run_rows(SELECT_ISA(dsv3_cross_entropy_grad_bf16_rows), &a);
  return NULL;
}

void dsv3_register_fused(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "softmax", js_softmax);
  dsv3_export(env, exports, "softmaxBackward", js_softmax_bwd);
  dsv3_export(env, exports, "logSoftmax", js_log_softmax);
  dsv3_export(env, exports, "logSoftmaxBackward", js_log_softmax_bwd);
  dsv3_export(env, exports, "rmsNorm", js_rms_norm);
  dsv3_export(env, exports, "rmsNormBackward", js_rms_norm_bwd);
  dsv3_export(env, exports, "rmsNormBf16", js_rms_norm_bf16);
  dsv3_export(env, exports, "crossEntropy", js_cross_entropy);
  dsv3_export(env, exports, "crossEntropyBackward", js_cross_entropy_bwd);
  dsv3_export(env, exports, "crossEntropyGradBf16", js_cross_entropy_grad_bf16);
}
