/* Node-API bindings of the row kernels (isa/rowops.c), with the JS signatures of the `Kernels`
 * interface (src/engine/kernels.ts):
 *   gatherRows(src, idx, scale|null, dst, rows, cols)
 *   gatherRowsBf16(src, idx, dst16, rows, cols)  (gatherRows, then bf16Round: dst16 bf16 bits)
 *   scatterAddRows(src, idx, scale|null, dst, rows, cols)
 *   rowDot(a, b, out, rows, cols)
 *   scaleRows(x, s, y, rows, cols[, y16])  (y16: also the bf16 bits of y, rounded block by block)
 *   copyStrided(src, dst, n0, n1, cols, ss0, ss1, ds0, ds1, accumulate)
 *   ropeRows(x, y, rows, cols, start, dr, mid, T, cos, sin, inverse)
 * Every buffer length and every index is checked before a kernel runs (RangeError naming the
 * argument). Large calls run on the thread pool: gather, dot, scale, copy and rope split rows
 * (copies whose destination rows overlap run on one thread); the scatter-add splits columns
 * (rows may share a destination, columns never do). */
#include "bf16_convert.h"
#include "fused_napi.h"
#include "rowops.h"

#define RG_PAR_MIN 32768 /* elements below which a call runs inline */

typedef struct {
  int kind; /* 0 gather, 1 scatter-add, 2 row dot, 3 scale rows, 4 strided copy, 5 rope, 6 gather to bf16 */
  const float *a, *b, *scale;
  const int32_t* idx;
  float* out;
  uint16_t* out16; /* 6; 3: optional bf16 bits of y */
  int64_t rows, cols, per;
  int64_t n1, st[4], start, dr, mid, T; /* copy: inner count, strides; rope: channel range, positions */
  int accumulate;
  float sign;
} rg_job;

static void rg_task(void* ctx, int t, int thread) {
  (void)thread;
  const rg_job* j = (const rg_job*)ctx;
  const int64_t s = (int64_t)t * j->per;
  switch (j->kind) {
    case 0: {
      const int64_t e = s + j->per < j->rows ? s + j->per : j->rows;
      SELECT_ISA(dsv3_gather_rows)(j->a, j->idx, j->scale, j->out, s, e, j->cols);
      break;
    }
    case 1: {
      const int64_t e = s + j->per < j->cols ? s + j->per : j->cols;
      SELECT_ISA(dsv3_scatter_add_rows)(j->a, j->idx, j->scale, j->out, j->rows, j->cols, s, e);
      break;
    }
    case 2: {
      const int64_t e = s + j->per < j->rows ? s + j->per : j->rows;
      SELECT_ISA(dsv3_row_dot)(j->a, j->b, j->out, s, e, j->cols);
      break;
    }
    case 3: {
      const int64_t e = s + j->per < j->rows ? s + j->per : j->rows;
      if (!j->out16) {
        SELECT_ISA(dsv3_scale_rows)(j->a, j->b, j->out, s, e, j->cols);
        break;
      }
      /* blocks of rows (about 2K elements, in L1) scaled, then rounded: the bits of scaleRows + bf16Round */
      const int64_t blk = j->cols >= 2048 ? 1 : 2048 / (j->cols > 0 ? j->cols : 1);
      for (int64_t r = s; r < e; r += blk) {
        const int64_t re = r + blk < e ? r + blk : e;
        SELECT_ISA(dsv3_scale_rows)(j->a, j->b, j->out, r, re, j->cols);
        SELECT_ISA(dsv3_bf16_round)(j->out + r * j->cols, j->out16 + r * j->cols, (re - r) * j->cols);
      }
      break;
    }
    case 4: {
      const int64_t e = s + j->per < j->rows ? s + j->per : j->rows;
      SELECT_ISA(dsv3_copy_strided)(j->a, j->out, s, e, j->n1, j->cols, j->st[0], j->st[1], j->st[2], j->st[3], j->accumulate);
      break;
    }
    case 6: {
      /* the gather copies rows exactly, so rounding each source row gives gather + bf16Round's bits */
      const int64_t e = s + j->per < j->rows ? s + j->per : j->rows;
      for (int64_t r = s; r < e; r++) SELECT_ISA(dsv3_bf16_round)(j->a + (int64_t)j->idx[r] * j->cols, j->out16 + r * j->cols, j->cols);
      break;
    }
    default: {
      const int64_t e = s + j->per < j->rows ? s + j->per : j->rows;
      SELECT_ISA(dsv3_rope_rows)(j->a, j->out, s, e, j->cols, j->start, j->dr, j->mid, j->T, j->b, j->scale, j->sign);
      break;
    }
  }
}

static void rg_run(rg_job* j) {
  const int th = dsv3_threads();
  const int split_cols = j->kind == 1;
  const int64_t extent = split_cols ? j->cols : j->rows;
  const int64_t work = j->rows * j->cols * (j->kind == 4 ? j->n1 : 1);
  if (j->rows == 0 || j->cols == 0) return;
  if (th <= 1 || work < RG_PAR_MIN || extent < 2 || (split_cols && j->cols < 32)) {
    j->per = extent;
    rg_task(j, 0, 0);
    return;
  }
  int64_t tasks = split_cols ? th : (int64_t)th * 4;
  if (tasks > extent) tasks = extent;
  j->per = (extent + tasks - 1) / tasks;
  if (split_cols) j->per = (j->per + 15) / 16 * 16; /* column ranges on 64-byte multiples */
  dsv3_parallel_for((int)((extent + j->per - 1) / j->per), rg_task, j);
}

/* A float32 argument that may be null (no scale). */
static int rg_opt_f32(napi_env env, napi_value v, const char* name, size_t need, const float** out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined)) {
    *out = NULL;
    return 0;
  }
  float* p;
  if (fz_f32(env, v, name, need, &p)) return -1;
  *out = p;
  return 0;
}

/* idx[0:rows] must lie in [0, limit) */
static int rg_indices(napi_env env, napi_value v, int64_t rows, int64_t limit, const int32_t** out) {
  void* p;
  if (fz_typed(env, v, napi_int32_array, "idx", (size_t)rows, &p)) return -1;
  const int32_t* idx = (const int32_t*)p;
  for (int64_t i = 0; i < rows; i++) {
    if (idx[i] < 0 || idx[i] >= limit) {
      char msg[160];
      snprintf(msg, sizeof msg, "dsv3 native: idx[%lld] = %d is out of range for %lld rows", (long long)i, idx[i],
               (long long)limit);
      napi_throw_range_error(env, NULL, msg);
      return -1;
    }
  }
  *out = idx;
  return 0;
}

/* gatherRows / scatterAddRows(src, idx, scale, dst, rows, cols): the indexed side is src for
 * the gather and dst for the scatter; its row count is its length / cols. */
static napi_value rg_indexed(napi_env env, napi_callback_info info, int kind) {
  GET_ARGS(env, info, 6);
  rg_job j = {0};
  j.kind = kind;
  if (fz_dims(env, argv[4], "rows", argv[5], "cols", &j.rows, &j.cols)) return NULL;
  float *src, *dst;
  const size_t dense = (size_t)(j.rows * j.cols);
  if (fz_f32(env, argv[0], "src", kind == 0 ? 0 : dense, &src) || fz_f32(env, argv[3], "dst", kind == 0 ? dense : 0, &dst))
    return NULL;
  size_t ilen = 0;
  napi_value ab;
  size_t off;
  napi_typedarray_type type;
  void* data;
  napi_get_typedarray_info(env, kind == 0 ? argv[0] : argv[3], &type, &ilen, &data, &ab, &off);
  const int64_t limit = j.cols > 0 ? (int64_t)ilen / j.cols : 0;
  if (j.cols > 0 && rg_indices(env, argv[1], j.rows, limit, &j.idx)) return NULL;
  if (rg_opt_f32(env, argv[2], "scale", (size_t)j.rows, &j.scale)) return NULL;
  j.a = src;
  j.out = dst;
  rg_run(&j);
  return NULL;
}

static napi_value js_gather_rows(napi_env env, napi_callback_info info) { return rg_indexed(env, info, 0); }

/* gatherRowsBf16(src, idx, dst16, rows, cols): dst16[r, :] = bf16 bits of src[idx[r], :] */
static napi_value js_gather_rows_bf16(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 5);
  rg_job j = {0};
  j.kind = 6;
  if (fz_dims(env, argv[3], "rows", argv[4], "cols", &j.rows, &j.cols)) return NULL;
  float* src;
  void* dst;
  if (fz_f32(env, argv[0], "src", 0, &src) ||
      fz_typed(env, argv[2], napi_uint16_array, "dst16", (size_t)(j.rows * j.cols), &dst))
    return NULL;
  size_t ilen = 0, off;
  napi_value ab;
  napi_typedarray_type type;
  void* data;
  napi_get_typedarray_info(env, argv[0], &type, &ilen, &data, &ab, &off);
  const int64_t limit = j.cols > 0 ? (int64_t)ilen / j.cols : 0;
  if (j.cols > 0 && rg_indices(env, argv[1], j.rows, limit, &j.idx)) return NULL;
  j.a = src;
  j.out16 = (uint16_t*)dst;
  rg_run(&j);
  return NULL;
}
static napi_value js_scatter_add_rows(napi_env env, napi_callback_info info) { return rg_indexed(env, info, 1); }

/* rowDot(a, b, out, rows, cols) / scaleRows(x, s, y, rows, cols[, y16]) */
static napi_value rg_rowwise(napi_env env, napi_callback_info info, int kind) {
  GET_ARGS(env, info, 5);
  rg_job j = {0};
  j.kind = kind;
  if (fz_dims(env, argv[3], "rows", argv[4], "cols", &j.rows, &j.cols)) return NULL;
  const size_t dense = (size_t)(j.rows * j.cols);
  float *a, *b, *out;
  if (kind == 2) {
    if (fz_f32(env, argv[0], "a", dense, &a) || fz_f32(env, argv[1], "b", dense, &b) ||
        fz_f32(env, argv[2], "out", (size_t)j.rows, &out))
      return NULL;
  } else if (fz_f32(env, argv[0], "x", dense, &a) || fz_f32(env, argv[1], "s", (size_t)j.rows, &b) ||
             fz_f32(env, argv[2], "y", dense, &out)) {
    return NULL;
  }
  if (kind == 3 && argc_ > 5) {
    napi_valuetype t;
    if (napi_typeof(env, argv[5], &t) != napi_ok) return NULL;
    if (t != napi_undefined && fz_typed(env, argv[5], napi_uint16_array, "y16", dense, (void**)&j.out16)) return NULL;
  }
  j.a = a;
  j.b = b;
  j.out = out;
  rg_run(&j);
  return NULL;
}

static napi_value js_row_dot(napi_env env, napi_callback_info info) { return rg_rowwise(env, info, 2); }
static napi_value js_scale_rows(napi_env env, napi_callback_info info) { return rg_rowwise(env, info, 3); }

/* elements a [n0, n1, cols] view with strides (s0, s1, 1) reaches */
static double rg_extent(int64_t n0, int64_t n1, int64_t cols, int64_t s0, int64_t s1) {
  if (n0 == 0 || n1 == 0 || cols == 0) return 0;
  return (double)(n0 - 1) * (double)s0 + (double)(n1 - 1) * (double)s1 + (double)cols;
}

/* copyStrided(src, dst, n0, n1, cols, ss0, ss1, ds0, ds1, accumulate) */
static napi_value js_copy_strided(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 10);
  rg_job j = {0};
  j.kind = 4;
  static const char* names[4] = {"ss0", "ss1", "ds0", "ds1"};
  if (fz_count(env, argv[2], "n0", &j.rows) || fz_count(env, argv[3], "n1", &j.n1) || fz_count(env, argv[4], "cols", &j.cols))
    return NULL;
  for (int i = 0; i < 4; i++)
    if (fz_count(env, argv[5 + i], names[i], &j.st[i])) return NULL;
  bool acc = false;
  if (napi_get_value_bool(env, argv[9], &acc) != napi_ok) {
    napi_throw_type_error(env, NULL, "dsv3 native: argument 'accumulate' must be a boolean");
    return NULL;
  }
  j.accumulate = acc;
  const double ns = rg_extent(j.rows, j.n1, j.cols, j.st[0], j.st[1]), nd = rg_extent(j.rows, j.n1, j.cols, j.st[2], j.st[3]);
  if (ns > 9007199254740991.0 || nd > 9007199254740991.0) {
    napi_throw_range_error(env, NULL, "dsv3 native: copyStrided: a view is too large");
    return NULL;
  }
  float *src, *dst;
  if (fz_f32(env, argv[0], "src", (size_t)ns, &src) || fz_f32(env, argv[1], "dst", (size_t)nd, &dst)) return NULL;
  j.a = src;
  j.out = dst;
  /* destination blocks of different i overlap: keep the copy on one thread */
  if (j.rows > 1 && j.st[2] < (j.n1 - 1) * j.st[3] + j.cols) {
    j.per = j.rows;
    rg_task(&j, 0, 0);
    return NULL;
  }
  rg_run(&j);
  return NULL;
}

/* ropeRows(x, y, rows, cols, start, dr, mid, T, cos, sin, inverse) */
static napi_value js_rope_rows(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 11);
  rg_job j = {0};
  j.kind = 5;
  if (fz_dims(env, argv[2], "rows", argv[3], "cols", &j.rows, &j.cols) || fz_count(env, argv[4], "start", &j.start) ||
      fz_count(env, argv[5], "dr", &j.dr) || fz_count(env, argv[6], "mid", &j.mid) || fz_count(env, argv[7], "T", &j.T))
    return NULL;
  if (j.dr % 2 != 0 || j.start + j.dr > j.cols || (j.rows > 0 && (j.mid < 1 || j.T < 1))) {
    napi_throw_range_error(env, NULL, "dsv3 native: ropeRows: need an even dr with start + dr <= cols, and mid, T >= 1");
    return NULL;
  }
  bool inv = false;
  if (napi_get_value_bool(env, argv[10], &inv) != napi_ok) {
    napi_throw_type_error(env, NULL, "dsv3 native: argument 'inverse' must be a boolean");
    return NULL;
  }
  j.sign = inv ? -1.0f : 1.0f;
  const size_t dense = (size_t)(j.rows * j.cols);
  /* positions used: min(T, ceil(rows / mid)) */
  const int64_t npos = j.rows == 0 ? 0 : ((j.rows + j.mid - 1) / j.mid < j.T ? (j.rows + j.mid - 1) / j.mid : j.T);
  float *x, *y, *c, *sn;
  if (fz_f32(env, argv[0], "x", dense, &x) || fz_f32(env, argv[1], "y", dense, &y) ||
      fz_f32(env, argv[8], "cos", (size_t)(npos * (j.dr / 2)), &c) || fz_f32(env, argv[9], "sin", (size_t)(npos * (j.dr / 2)), &sn))
    return NULL;
  j.a = x;
  j.out = y;
  j.b = c;
  j.scale = sn;
  rg_run(&j);
  return NULL;
}

void dsv3_register_rowops(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "copyStrided", js_copy_strided);
  dsv3_export(env, exports, "ropeRows", js_rope_rows);
  dsv3_export(env, exports, "gatherRows", js_gather_rows);
  dsv3_export(env, exports, "gatherRowsBf16", js_gather_rows_bf16);
  dsv3_export(env, exports, "scatterAddRows", js_scatter_add_rows);
  dsv3_export(env, exports, "rowDot", js_row_dot);
  dsv3_export(env, exports, "scaleRows", js_scale_rows);
}
