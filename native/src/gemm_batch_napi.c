/* gemmBatch: a batch of independent GEMMs with shared transposes, alpha, beta and leading
 * dimensions, C_i = alpha op(A_i) op(B_i) + beta C_i with sizes dims[3i..3i+2] = (m, n, k):
 *   gemmBatch(transA, transB, dims: Int32Array, alpha, as: Float32Array[], lda,
 *             bs: Float32Array[], ldb, beta, cs: Float32Array[], ldc)
 * (the JS signature of Kernels.gemmBatch, src/engine/kernels.ts). The GEMMs run concurrently,
 * each on one thread of the pool (the GEMM engine runs single-threaded inside a pool task,
 * see gemm.h), largest first, so many small GEMMs (one per MoE expert) keep every core busy
 * without splitting each one, which at these sizes costs more in packing and synchronisation
 * than it gains.
 *   gemmBatchBf16(...same...)  bs: Uint16Array[] of bfloat16 bits; each A rounded to bf16
 * (Kernels.gemmBatchBf16: the per-GEMM semantics of gemmBf16, see gemm.h).
 *   gemmBatchBf16Ab(...same...)  as and bs: Uint16Array[] of bfloat16 bits (gemmBf16Ab). Every operand's extent is checked first (RangeError naming it). When two C
 * regions overlap, the GEMMs run one after another in order instead. */
#include <stdlib.h>
#include "fused_napi.h"
#include "gemm.h"

#define GB_MAX 4096

typedef struct {
  int ta, tb;
  float alpha, beta;
  int64_t lda, ldb, ldc;
  const int32_t* dims;
  const float** a;
  const float** b;
  int bf16; /* 1: b holds uint16_t* (bf16 bits); 2: a too */
  float** c;
  const int* order; /* task t runs GEMM order[t] */
  volatile int fail;
} gb_job;

static int gb_one(const gb_job* j, int i) {
  const int64_t m = j->dims[3 * i], n = j->dims[3 * i + 1], k = j->dims[3 * i + 2];
  if (j->bf16 == 2)
    return dsv3_gemm_bf16ab(j->ta, j->tb, m, n, k, j->alpha, (const uint16_t*)j->a[i], j->lda, (const uint16_t*)j->b[i], j->ldb, j->beta, j->c[i], j->ldc);
  if (j->bf16)
    return dsv3_gemm_bf16(j->ta, j->tb, m, n, k, j->alpha, j->a[i], j->lda, (const uint16_t*)j->b[i], j->ldb, j->beta, j->c[i], j->ldc);
  return dsv3_gemm_f32(j->ta, j->tb, m, n, k, j->alpha, j->a[i], j->lda, j->b[i], j->ldb, j->beta, j->c[i], j->ldc);
}

static void gb_task(void* ctx, int t, int thread) {
  (void)thread;
  gb_job* j = (gb_job*)ctx;
  if (gb_one(j, j->order[t])) j->fail = 1;
}

static size_t gb_extent(int64_t rows, int64_t cols, int64_t ld) {
  return rows > 0 && cols > 0 ? (size_t)((rows - 1) * ld + cols) : 0;
}

/* element i of a JS array of Float32Arrays, with at least `need` elements */
static int gb_elem(napi_env env, napi_value arr, uint32_t i, const char* name, size_t need, float** out) {
  napi_value v;
  char label[48];
  snprintf(label, sizeof label, "%s[%u]", name, i);
  if (napi_get_element(env, arr, i, &v) != napi_ok) return -1;
  return fz_f32(env, v, label, need, out);
}

/* element i of a JS array of Uint16Arrays (bf16 bits), with at least `need` elements */
static int gb_elem_u16(napi_env env, napi_value arr, uint32_t i, const char* name, size_t need, float** out) {
  napi_value v;
  char label[48];
  snprintf(label, sizeof label, "%s[%u]", name, i);
  if (napi_get_element(env, arr, i, &v) != napi_ok) return -1;
  return fz_typed(env, v, napi_uint16_array, label, need, (void**)out);
}

static int gb_ld(napi_env env, napi_value v, const char* name, int64_t* out) {
  if (fz_count(env, v, name, out)) return -1;
  if (*out < 1) {
    char msg[96];
    snprintf(msg, sizeof msg, "dsv3 native: gemmBatch: argument '%s' must be >= 1", name);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  return 0;
}

static int cmp_region(const void* x, const void* y) {
  const uintptr_t* a = (const uintptr_t*)x;
  const uintptr_t* b = (const uintptr_t*)y;
  return a[0] < b[0] ? -1 : a[0] > b[0];
}

static const int32_t* gb_sort_dims;
static int cmp_work(const void* x, const void* y) { /* descending m*n*k */
  const int32_t* d = gb_sort_dims;
  const int a = *(const int*)x, b = *(const int*)y;
  const double wa = (double)d[3 * a] * d[3 * a + 1] * d[3 * a + 2], wb = (double)d[3 * b] * d[3 * b + 1] * d[3 * b + 2];
  return wa > wb ? -1 : wa < wb ? 1 : a - b;
}

static napi_value gemm_batch_common(napi_env env, napi_callback_info info, int bf16) {
  GET_ARGS(env, info, 11);
  gb_job j = {0};
  j.bf16 = bf16;
  bool ta, tb;
  double alpha, beta;
  if (napi_get_value_bool(env, argv[0], &ta) != napi_ok || napi_get_value_bool(env, argv[1], &tb) != napi_ok) {
    napi_throw_type_error(env, NULL, "dsv3 native: gemmBatch: transA and transB must be booleans");
    return NULL;
  }
  if (dsv3_double(env, argv[3], &alpha, "alpha") || dsv3_double(env, argv[8], &beta, "beta") ||
      gb_ld(env, argv[5], "lda", &j.lda) || gb_ld(env, argv[7], "ldb", &j.ldb) || gb_ld(env, argv[10], "ldc", &j.ldc))
    return NULL;
  void* dp;
  size_t ndims;
  napi_value ab;
  size_t off;
  napi_typedarray_type type;
  bool is = false;
  if (napi_is_typedarray(env, argv[2], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[2], &type, &ndims, &dp, &ab, &off) != napi_ok || type != napi_int32_array ||
      ndims % 3 != 0 || ndims / 3 > GB_MAX) {
    napi_throw_type_error(env, NULL, "dsv3 native: gemmBatch: dims must be an Int32Array of (m, n, k) triples (at most 4096)");
    return NULL;
  }
  const int count = (int)(ndims / 3);
  const int32_t* dims = (const int32_t*)dp;
  uint32_t la = 0, lb = 0, lc = 0;
  napi_get_array_length(env, argv[4], &la);
  napi_get_array_length(env, argv[6], &lb);
  napi_get_array_length(env, argv[9], &lc);
  if ((int)la < count || (int)lb < count || (int)lc < count) {
    napi_throw_range_error(env, NULL, "dsv3 native: gemmBatch: as, bs and cs need one array per GEMM");
    return NULL;
  }
  if (count == 0) return NULL;
  const float** A = malloc(sizeof(float*) * (size_t)count);
  const float** Bv = malloc(sizeof(float*) * (size_t)count);
  float** C = malloc(sizeof(float*) * (size_t)count);
  int* order = malloc(sizeof(int) * (size_t)count);
  uintptr_t* reg = malloc(sizeof(uintptr_t) * 2 * (size_t)count);
  int nreg = 0, ok = A && Bv && C && order && reg;
  if (!ok) napi_throw_error(env, NULL, "dsv3 native: gemmBatch: out of memory");
  for (int i = 0; ok && i < count; i++) {
    const int64_t m = dims[3 * i], n = dims[3 * i + 1], k = dims[3 * i + 2];
    if (m < 0 || n < 0 || k < 0) {
      napi_throw_range_error(env, NULL, "dsv3 native: gemmBatch: sizes must be non-negative");
      ok = 0;
      break;
    }
    const int64_t arows = ta ? k : m, acols = ta ? m : k, brows = tb ? n : k, bcols = tb ? k : n;
    if (j.lda < acols || j.ldb < bcols || j.ldc < n) {
      char msg[160];
      snprintf(msg, sizeof msg, "dsv3 native: gemmBatch: GEMM %d (%lld x %lld x %lld) needs lda >= %lld, ldb >= %lld, ldc >= %lld", i,
               (long long)m, (long long)n, (long long)k, (long long)acols, (long long)bcols, (long long)n);
      napi_throw_range_error(env, NULL, msg);
      ok = 0;
      break;
    }
    const int reads = m > 0 && n > 0 && k > 0;
    float *a, *b, *c;
    if ((bf16 == 2 ? gb_elem_u16 : gb_elem)(env, argv[4], (uint32_t)i, "as", reads ? gb_extent(arows, acols, j.lda) : 0, &a) ||
        (bf16 ? gb_elem_u16 : gb_elem)(env, argv[6], (uint32_t)i, "bs", reads ? gb_extent(brows, bcols, j.ldb) : 0, &b) ||
        gb_elem(env, argv[9], (uint32_t)i, "cs", gb_extent(m, n, j.ldc), &c)) {
      ok = 0;
      break;
    }
    A[i] = a;
    Bv[i] = b;
    C[i] = c;
    order[i] = i;
    const size_t ce = gb_extent(m, n, j.ldc);
    if (ce > 0) {
      reg[2 * nreg] = (uintptr_t)c;
      reg[2 * nreg + 1] = (uintptr_t)(c + ce);
      nreg++;
    }
  }
  if (ok) {
    j.ta = ta;
    j.tb = tb;
    j.alpha = (float)alpha;
    j.beta = (float)beta;
    j.dims = dims;
    j.a = A;
    j.b = Bv;
    j.c = C;
    j.order = order;
    /* overlapping outputs: keep the given order, one GEMM at a time */
    qsort(reg, (size_t)nreg, 2 * sizeof(uintptr_t), cmp_region);
    int overlap = 0;
    for (int r = 1; r < nreg; r++)
      if (reg[2 * r] < reg[2 * r - 1]) overlap = 1;
    if (overlap || count == 1 || dsv3_threads() <= 1) {
      for (int i = 0; i < count; i++)
        if (gb_one(&j, i)) j.fail = 1;
    } else {
      gb_sort_dims = dims; /* the JS thread is the only caller */
      qsort(order, (size_t)count, sizeof(int), cmp_work);
      dsv3_parallel_for(count, gb_task, &j);
    }
    if (j.fail) napi_throw_error(env, NULL, "dsv3 native: gemmBatch: a GEMM could not allocate its packing buffers");
  }
  free(A);
  free(Bv);
  free(C);
  free(order);
  free(reg);
  return NULL;
}

static napi_value js_gemm_batch(napi_env env, napi_callback_info info) { return gemm_batch_common(env, info, 0); }
static napi_value js_gemm_batch_bf16(napi_env env, napi_callback_info info) { return gemm_batch_common(env, info, 1); }
static napi_value js_gemm_batch_bf16ab(napi_env env, napi_callback_info info) { return gemm_batch_common(env, info, 2); }

void dsv3_register_gemm_batch(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "gemmBatch", js_gemm_batch);
  dsv3_export(env, exports, "gemmBatchBf16", js_gemm_batch_bf16);
  dsv3_export(env, exports, "gemmBatchBf16Ab", js_gemm_batch_bf16ab);
}
