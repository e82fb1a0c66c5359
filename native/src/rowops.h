/* Row kernels of the MoE dispatch / combine and of MLA's key assembly and RoPE (isa/rowops.c,
 * compiled once per ISA) and their bindings (rowops_napi.c). Rows are `cols` contiguous floats. */
#ifndef DSV3_ROWOPS_H
#define DSV3_ROWOPS_H
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
/* For i in [i0, i1), j < n1: dst[i*ds0 + j*ds1 + c] (+)= src[i*ss0 + j*ss1 + c], c < cols
 * (accumulate: +=). Strides may be 0 (broadcast source; with accumulate, a reduction into dst). */
DECLARE_ISA(void, dsv3_copy_strided, (const float* src, float* dst, int64_t i0, int64_t i1, int64_t n1, int64_t cols,
                                      int64_t ss0, int64_t ss1, int64_t ds0, int64_t ds1, int accumulate))
/* Rows r in [r0, r1) of `cols` floats: y = x with channels [start, start + dr) rotated as
 * interleaved pairs by the angle of position t = (r / mid) % T: (a, b) -> (a c - b s, a s + b c),
 * c = cos[t*dr/2 + i], s = sign * sin[t*dr/2 + i]. y may alias x. */
DECLARE_ISA(void, dsv3_rope_rows, (const float* x, float* y, int64_t r0, int64_t r1, int64_t cols, int64_t start,
                                   int64_t dr, int64_t mid, int64_t T, const float* cos, const float* sin, float sign))
#endif
