/* Shared by the Node-API bindings of the per-segment FP8 kernels (fp8_quant_napi.c,
 * fp8_swiglu_napi.c): the `offsets` argument (segments of rows, one expert's tokens each) and a
 * grow-only thread-local float scratch. */
#ifndef DSV3_FP8_SEGMENTS_NAPI_H
#define DSV3_FP8_SEGMENTS_NAPI_H
#include <stdlib.h>
#include "fused_napi.h"

/* offsets (an Int32Array from 0 to rows, non-decreasing) or null / undefined (one segment
 * [0, rows), *starts = one, which the caller provides): *nseg segments, *ntask 128-row groups,
 * *nscale 128x1 scales (ceil(n_e / 128) * cols summed). 0, or -1 with a TypeError / RangeError
 * naming 'offsets' thrown. */
static inline int f8s_segments(napi_env env, napi_value v, int64_t rows, int64_t cols, int32_t one[2], const int32_t** starts,
                               int64_t* nseg, int64_t* ntask, int64_t* nscale) {
  napi_valuetype vt;
  one[0] = 0;
  one[1] = (int32_t)rows;
  *starts = one;
  *nseg = 1;
  if (napi_typeof(env, v, &vt) != napi_ok) return -1;
  if (vt != napi_null && vt != napi_undefined) {
    bool is = false;
    napi_typedarray_type type;
    size_t len = 0, off;
    void* data = NULL;
    napi_value ab;
    if (napi_is_typedarray(env, v, &is) != napi_ok || !is || napi_get_typedarray_info(env, v, &type, &len, &data, &ab, &off) != napi_ok ||
        type != napi_int32_array) {
      napi_throw_type_error(env, NULL, "dsv3 native: argument 'offsets' must be an Int32Array or null");
      return -1;
    }
    *starts = (const int32_t*)data;
    if (len < 2 || (*starts)[0] != 0 || (*starts)[len - 1] != rows) {
      napi_throw_range_error(env, NULL, "dsv3 native: argument 'offsets' must run from 0 to rows");
      return -1;
    }
    *nseg = (int64_t)len - 1;
  }
  *ntask = 0;
  *nscale = 0;
  for (int64_t e = 0; e < *nseg; e++) {
    const int64_t n = (int64_t)(*starts)[e + 1] - (*starts)[e];
    if (n < 0) {
      napi_throw_range_error(env, NULL, "dsv3 native: argument 'offsets' must not decrease");
      return -1;
    }
    *ntask += (n + 127) / 128;
    *nscale += (n + 127) / 128 * cols;
  }
  return 0;
}

/* This thread's scratch of at least `bytes` (64-byte aligned, grown in pages, kept), or NULL. */
static _Thread_local float* f8s_buf;
static _Thread_local size_t f8s_cap;
static inline float* f8s_scratch(size_t bytes) {
  if (f8s_cap >= bytes) return f8s_buf;
  free(f8s_buf);
  f8s_buf = NULL;
  f8s_cap = 0;
  void* p = NULL;
  const size_t sz = (bytes + 4095) & ~(size_t)4095;
  if (posix_memalign(&p, 64, sz) != 0) return NULL;
  f8s_buf = (float*)p;
  f8s_cap = sz;
  return f8s_buf;
}
#endif
