/* Row gather / scatter kernels of the MoE dispatch and combine (isa/rowgather.c, compiled once
 * per ISA) and their bindings (rowgather_napi.c). Rows are `cols` contiguous floats. */
#ifndef DSV3_ROWGATHER_H
#define DSV3_ROWGATHER_H
#include <stddef.h>
#include <stdint.h>
#include "isa.h"

/* dst[i, :] = src[idx[i], :] * (scale ? scale[i] : 1) for rows i in [r0, r1) */
DECLARE_ISA(void, dsv3_gather_rows, (const float* src, const int32_t* idx, const float* scale, float* dst, int64_t r0,
                                     int64_t r1, int64_t cols))
/* dst[idx[i], c0:c1] += (scale ? scale[i] : 1) * src[i, c0:c1] for i = 0 .. rows-1 in order (fused multiply-add) */
DECLARE_ISA(void, dsv3_scatter_add_rows, (const float* src, const int32_t* idx, const float* scale, float* dst,
                                          int64_t rows, int64_t cols, int64_t c0, int64_t c1))
/* out[i] = sum_j a[i, j] * b[i, j] for rows i in [r0, r1) */
DECLARE_ISA(void, dsv3_row_dot, (const float* a, const float* b, float* out, int64_t r0, int64_t r1, int64_t cols))
/* y[i, :] = s[i] * x[i, :] for rows i in [r0, r1); y may alias x */
DECLARE_ISA(void, dsv3_scale_rows, (const float* x, const float* s, float* y, int64_t r0, int64_t r1, int64_t cols))
#endif
