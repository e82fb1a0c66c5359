/* Node-API bindings of the FP8 (E4M3) operand quantisers (isa/fp8_quant.c, contracts in
 * fp8_quant.h), with the JS signatures of the `Kernels` interface (src/engine/kernels.ts):
 *   fp8QuantTiles1x128(x, ld, rows, cols, codes|null, scales|null, out|null)
 *   fp8QuantTiles128x1(x, ld, rows, cols, codes|null, scales|null, out|null)
 *   fp8QuantBlocks128(x, ld, rows, cols, codes|null, scales|null, out|null)
 *   fp8Dequant(codes, scales, rows, cols, blockRows, out)
 *   fp8RequantTiles128x1(codes, scales, rows, cols, offsets|null, outCodes, outScales)
 *   fp8QuantTiles128x1Segments(x, rows, cols, offsets, outCodes, outScales)
 *   fp8QuantTilesDual(x, rows, cols, offsets, codes, scales, colCodes, colScales)
 * x Float32Array (row r at x[r*ld ..], ld >= cols), codes Uint8Array [rows*cols], scales
 * Float32Array (layouts in fp8_quant.h), out Float32Array [rows*cols]. codes and scales are given
 * both or neither (TypeError otherwise). Every length is checked before a kernel runs
 * (RangeError naming the argument). Large calls run on the thread pool: row ranges for the
 * 1x128 tiles and the dequantisation, (128-row group x column chunk) tasks for the 128x1 tiles
 * and 128x128 blocks. */
#include <stdlib.h>
#include "fp8_quant.h"
#include "fused_napi.h"
#include "fp8_segments_napi.h"

typedef struct {
  int kind; /* 0 rows (1x128), 1 columns (128x1), 2 blocks (128x128), 3 dequantise */
  const float* x;
  const uint8_t* cin;
  int64_t ld, rows, cols, per, chunk, nchunk, block_rows;
  uint8_t* codes;
  float *scales, *out;
} q8_job;

static void q8_task(void* ctx, int t, int thread) {
  (void)thread;
  const q8_job* j = (const q8_job*)ctx;
  if (j->kind == 1 || j->kind == 2) {
    const int64_t g = t / j->nchunk, c0 = (t % j->nchunk) * j->chunk;
    const int64_t r0 = g * 128, r1 = r0 + 128 < j->rows ? r0 + 128 : j->rows;
    const int64_t c1 = c0 + j->chunk < j->cols ? c0 + j->chunk : j->cols;
    float* sc = j->scales ? j->scales + g * (j->kind == 1 ? j->cols : (j->cols + 127) / 128) : NULL;
    SELECT_ISA(dsv3_fp8_quant_cols)(j->x, j->ld, r0, r1, c0, c1, j->cols, j->kind == 2, j->codes, sc, j->out);
    return;
  }
  const int64_t r0 = (int64_t)t * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
  if (j->kind == 0) SELECT_ISA(dsv3_fp8_quant_rows)(j->x, j->ld, r0, r1, j->cols, j->codes, j->scales, j->out);
  else SELECT_ISA(dsv3_fp8_quant_dequant)(j->cin, j->scales, r0, r1, j->cols, j->block_rows, j->out);
}

static void q8_run(q8_job* j) {
  const int64_t work = j->rows * j->cols;
  const int th = dsv3_threads();
  if (work == 0) return;
  const int par = th > 1 && work >= FZ_PAR_MIN;
  if (j->kind == 1 || j->kind == 2) {
    /* column chunks of up to FP8_QUANT_CHUNK (long row segments stream well and the 128-row group
     * stays in L2 for the second pass), halved down to 128 until there are 4 tasks per thread */
    const int64_t groups = (j->rows + 127) / 128;
    j->chunk = FP8_QUANT_CHUNK;
    while (par && j->chunk > 128 && groups * ((j->cols + j->chunk - 1) / j->chunk) < 4 * (int64_t)th) j->chunk /= 2;
    j->nchunk = (j->cols + j->chunk - 1) / j->chunk;
    const int64_t n = j->nchunk * groups;
    if (par && n > 1) dsv3_parallel_for((int)n, q8_task, j);
    else
      for (int64_t t = 0; t < n; t++) q8_task(j, (int)t, 0);
    return;
  }
  int64_t tasks = par ? work / FZ_TASK_MIN : 1;
  if (tasks > (int64_t)th * 8) tasks = (int64_t)th * 8;
  if (tasks > j->rows) tasks = j->rows;
  if (tasks < 1) tasks = 1;
  j->per = (j->rows + tasks - 1) / tasks;
  const int n = (int)((j->rows + j->per - 1) / j->per);
  if (n > 1) dsv3_parallel_for(n, q8_task, j);
  else q8_task(j, 0, 0);
}

/* A typed array of type `want` with >= need elements, or null / undefined (*out = NULL) when
 * `optional`. An empty array yields a valid, never-dereferenced pointer. */
static int q8_arg(napi_env env, napi_value v, napi_typedarray_type want, const char* tname, const char* name,
                  size_t need, int optional, void** out) {
  static float empty[16];
  napi_valuetype vt;
  bool is = false;
  napi_typedarray_type type;
  size_t len, off;
  void* data = NULL;
  napi_value ab;
  if (optional && napi_typeof(env, v, &vt) == napi_ok && (vt == napi_null || vt == napi_undefined)) {
    *out = NULL;
    return 0;
  }
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, &len, &data, &ab, &off) != napi_ok || type != want) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a %s%s", name, tname, optional ? " or null" : "");
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  if (dsv3_need(env, len, need, name)) return -1;
  *out = data ? data : (void*)empty;
  return 0;
}

/* fp8QuantTiles1x128 / fp8QuantTiles128x1 / fp8QuantBlocks128(x, ld, rows, cols, codes, scales, out) */
static napi_value q8_quant(napi_env env, napi_callback_info info, int kind) {
  GET_ARGS(env, info, 7);
  q8_job j = {0};
  j.kind = kind;
  if (fz_count(env, argv[1], "ld", &j.ld) || fz_dims(env, argv[2], "rows", argv[3], "cols", &j.rows, &j.cols)) return NULL;
  const int empty = j.rows == 0 || j.cols == 0;
  if (!empty && j.ld < j.cols) {
    napi_throw_range_error(env, NULL, "dsv3 native: argument 'ld' must be >= cols");
    return NULL;
  }
  if (!empty && j.rows > 1 && j.ld > (9007199254740991LL - j.cols) / (j.rows - 1)) {
    napi_throw_range_error(env, NULL, "dsv3 native: (rows - 1) * ld + cols is too large");
    return NULL;
  }
  const size_t nx = empty ? 0 : (size_t)((j.rows - 1) * j.ld + j.cols), dense = (size_t)(j.rows * j.cols);
  const int64_t rg = (j.rows + 127) / 128, cg = (j.cols + 127) / 128;
  const size_t ns = (size_t)(kind == 0 ? j.rows * cg : kind == 1 ? rg * j.cols : rg * cg);
  void *x, *codes, *scales, *out;
  if (q8_arg(env, argv[0], napi_float32_array, "Float32Array", "x", nx, 0, &x) ||
      q8_arg(env, argv[4], napi_uint8_array, "Uint8Array", "codes", dense, 1, &codes) ||
      q8_arg(env, argv[5], napi_float32_array, "Float32Array", "scales", ns, 1, &scales) ||
      q8_arg(env, argv[6], napi_float32_array, "Float32Array", "out", dense, 1, &out))
    return NULL;
  if (!codes != !scales) {
    napi_throw_type_error(env, NULL, "dsv3 native: 'codes' and 'scales' must be given both or neither");
    return NULL;
  }
  j.x = (const float*)x;
  j.codes = (uint8_t*)codes;
  j.scales = (float*)scales;
  j.out = (float*)out;
  if (j.codes || j.out) q8_run(&j);
  return NULL;
}

static napi_value js_tiles_1x128(napi_env env, napi_callback_info info) { return q8_quant(env, info, 0); }
static napi_value js_tiles_128x1(napi_env env, napi_callback_info info) { return q8_quant(env, info, 1); }
static napi_value js_blocks_128(napi_env env, napi_callback_info info) { return q8_quant(env, info, 2); }

/* fp8Dequant(codes, scales, rows, cols, blockRows, out) */
static napi_value js_dequant(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 6);
  q8_job j = {0};
  j.kind = 3;
  if (fz_dims(env, argv[2], "rows", argv[3], "cols", &j.rows, &j.cols) || fz_count(env, argv[4], "blockRows", &j.block_rows))
    return NULL;
  if (j.block_rows < 1) {
    napi_throw_range_error(env, NULL, "dsv3 native: argument 'blockRows' must be >= 1");
    return NULL;
  }
  const size_t dense = (size_t)(j.rows * j.cols);
  const size_t ns = (size_t)(((j.rows + j.block_rows - 1) / j.block_rows) * ((j.cols + 127) / 128));
  void *codes, *scales, *out;
  if (q8_arg(env, argv[0], napi_uint8_array, "Uint8Array", "codes", dense, 0, &codes) ||
      q8_arg(env, argv[1], napi_float32_array, "Float32Array", "scales", ns, 0, &scales) ||
      q8_arg(env, argv[5], napi_float32_array, "Float32Array", "out", dense, 0, &out))
    return NULL;
  j.cin = (const uint8_t*)codes;
  j.scales = (float*)scales;
  j.out = (float*)out;
  q8_run(&j);
  return NULL;
}

/* ---- fp8RequantTiles128x1 / fp8QuantTiles128x1Segments: 128x1 tiles per segment of rows -----
 * One task per (segment, 128-row group of it): the group's 1x128-tile codes are dequantised
 * into a thread-local scratch of <= 128 x cols floats, their column amax taken in the same pass,
 * and then quantised in 128x1 tiles (codes, scales) while it is in cache (dsv3_fp8_requant_cols):
 * the values of fp8Dequant + fp8QuantTiles128x1, without the float32 copy of the whole operand.
 * fp8QuantTiles128x1Segments quantises float32 rows the same way (no dequantisation): every
 * expert's Wgrad operand in one call (one parallel region) instead of one call per expert. */
typedef struct {
  const uint8_t* codes; /* NULL: quantise x instead (fp8QuantTiles128x1Segments) */
  const float* scales;
  const float* x;
  int64_t cols;
  const int32_t* starts; /* segment starts, nseg + 1 */
  const int64_t* task_seg; /* per task: its segment */
  const int64_t* task_row; /* per task: its first row */
  const int64_t* task_so;  /* per task: where its row of scales starts in out_scales */
  uint8_t* out_codes;
  float* out_scales;
  uint8_t* row_codes; /* fp8QuantTilesDual: the 1x128 tiles too (codes [rows][cols], scales [rows][nt]) */
  float* row_scales;
  volatile int fail;
} rq_job;

static void rq_task(void* ctx, int t, int thread) {
  (void)thread;
  rq_job* j = (rq_job*)ctx;
  const int64_t e = j->task_seg[t], r0 = j->task_row[t], end = j->starts[e + 1];
  const int64_t n = end - r0 < 128 ? end - r0 : 128, cols = j->cols, nt = (cols + 127) / 128;
  if (!j->codes) { /* float32 rows: 128x1 tiles of the group straight from x */
    for (int64_t c0 = 0; c0 < cols; c0 += FP8_QUANT_CHUNK) {
      const int64_t c1 = c0 + FP8_QUANT_CHUNK < cols ? c0 + FP8_QUANT_CHUNK : cols;
      if (j->row_codes)
        SELECT_ISA(dsv3_fp8_quant_dual)(j->x + r0 * cols, n, c0, c1, cols, j->row_codes + r0 * cols, j->row_scales + r0 * nt,
                                        j->out_codes + r0 * cols, j->out_scales + j->task_so[t]);
      else
        SELECT_ISA(dsv3_fp8_quant_cols)(j->x + r0 * cols, cols, 0, n, c0, c1, cols, 0, j->out_codes + r0 * cols, j->out_scales + j->task_so[t], NULL);
    }
    return;
  }
  float* rq_buf = f8s_scratch((size_t)(n * cols) * sizeof(float));
  if (!rq_buf) {
    j->fail = 1;
    return;
  }
  for (int64_t c0 = 0; c0 < cols; c0 += FP8_QUANT_CHUNK) {
    const int64_t c1 = c0 + FP8_QUANT_CHUNK < cols ? c0 + FP8_QUANT_CHUNK : cols;
    SELECT_ISA(dsv3_fp8_requant_cols)(j->codes + r0 * cols, j->scales + r0 * nt, n, c0, c1, cols, rq_buf, j->out_codes + r0 * cols,
                                      j->out_scales + j->task_so[t]);
  }
}

/* fp8RequantTiles128x1(codes, scales, rows, cols, offsets|null, outCodes, outScales) (from_x 0),
 * fp8QuantTiles128x1Segments(x, rows, cols, offsets, outCodes, outScales) (from_x 1) or
 * fp8QuantTilesDual(x, rows, cols, offsets, codes, scales, colCodes, colScales) (from_x 2: the
 * 1x128 tiles of fp8QuantTiles1x128 and the 128x1 tiles of fp8QuantTiles128x1Segments at once) */
static napi_value rq_run(napi_env env, napi_callback_info info, int from_x) {
  GET_ARGS(env, info, from_x == 2 ? 8 : from_x ? 6 : 7);
  void *rcodes = NULL, *rscales = NULL;
  napi_value rcv = NULL, rsv = NULL;
  if (from_x == 2) { /* (x, rows, cols, offsets, codes, scales, colCodes, colScales) -> the positions below */
    rcv = argv[4];
    rsv = argv[5];
    argv[4] = argv[6];
    argv[5] = argv[7];
  }
  if (from_x) { /* the same argument positions as the re-quantiser's, without scales */
    for (int i = 6; i > 1; i--) argv[i] = argv[i - 1];
  }
  int64_t rows, cols;
  if (fz_dims(env, argv[2], "rows", argv[3], "cols", &rows, &cols)) return NULL;
  int32_t one[2];
  const int32_t* starts;
  int64_t nseg, ntask, nscale;
  if (f8s_segments(env, argv[4], rows, cols, one, &starts, &nseg, &ntask, &nscale)) return NULL;
  const size_t dense = (size_t)(rows * cols), ns = (size_t)(rows * ((cols + 127) / 128));
  void *codes = NULL, *scales = NULL, *x = NULL, *oc, *os;
  if ((from_x ? q8_arg(env, argv[0], napi_float32_array, "Float32Array", "x", dense, 0, &x)
              : q8_arg(env, argv[0], napi_uint8_array, "Uint8Array", "codes", dense, 0, &codes) ||
                    q8_arg(env, argv[1], napi_float32_array, "Float32Array", "scales", ns, 0, &scales)) ||
      q8_arg(env, argv[5], napi_uint8_array, "Uint8Array", "outCodes", dense, 0, &oc) ||
      q8_arg(env, argv[6], napi_float32_array, "Float32Array", "outScales", (size_t)nscale, 0, &os))
    return NULL;
  if (from_x == 2 && (q8_arg(env, rcv, napi_uint8_array, "Uint8Array", "codes", dense, 0, &rcodes) ||
                      q8_arg(env, rsv, napi_float32_array, "Float32Array", "scales", ns, 0, &rscales)))
    return NULL;
  if (dense == 0 || ntask == 0) return NULL;
  int64_t* plan = (int64_t*)malloc((size_t)ntask * 3 * sizeof(int64_t));
  if (!plan) {
    napi_throw_error(env, NULL, "dsv3 native: fp8RequantTiles128x1: out of memory");
    return NULL;
  }
  rq_job j = {(const uint8_t*)codes, (const float*)scales, (const float*)x, cols, starts, plan, plan + ntask, plan + 2 * ntask,
              (uint8_t*)oc, (float*)os, (uint8_t*)rcodes, (float*)rscales, 0};
  int64_t t = 0, so = 0;
  for (int64_t e = 0; e < nseg; e++)
    for (int64_t r = starts[e]; r < starts[e + 1]; r += 128, t++, so += cols) {
      plan[t] = e;
      plan[ntask + t] = r;
      plan[2 * ntask + t] = so;
    }
  const int th = dsv3_threads();
  if (th > 1 && (int64_t)dense >= FZ_PAR_MIN && ntask > 1) dsv3_parallel_for((int)ntask, rq_task, &j);
  else
    for (t = 0; t < ntask; t++) rq_task(&j, (int)t, 0);
  free(plan);
  if (j.fail) napi_throw_error(env, NULL, "dsv3 native: fp8RequantTiles128x1: out of memory");
  return NULL;
}
static napi_value js_requant_128x1(napi_env env, napi_callback_info info) { return rq_run(env, info, 0); }
static napi_value js_quant_128x1_segments(napi_env env, napi_callback_info info) { return rq_run(env, info, 1); }
static napi_value js_quant_tiles_dual(napi_env env, napi_callback_info info) { return rq_run(env, info, 2); }

void dsv3_register_fp8_swiglu(napi_env env, napi_value exports); /* fp8_swiglu_napi.c */

void dsv3_register_fp8_quant(napi_env env, napi_value exports) {
  dsv3_register_fp8_swiglu(env, exports);
  dsv3_export(env, exports, "fp8QuantTiles1x128", js_tiles_1x128);
  dsv3_export(env, exports, "fp8QuantTiles128x1", js_tiles_128x1);
  dsv3_export(env, exports, "fp8QuantBlocks128", js_blocks_128);
  dsv3_export(env, exports, "fp8Dequant", js_dequant);
  dsv3_export(env, exports, "fp8RequantTiles128x1", js_requant_128x1);
  dsv3_export(env, exports, "fp8QuantTiles128x1Segments", js_quant_128x1_segments);
  dsv3_export(env, exports, "fp8QuantTilesDual", js_quant_tiles_dual);
}
