/* Row kernels: gather rows by index (optionally scaled), scatter-add rows by index with a
 * per-row scale, per-row dot products and scaling (MoE dispatch and combine), a strided 3-D
 * copy / accumulate (MLA key assembly) and RoPE on a channel range of each row.
 * Declarations and contracts: rowops.h. */
#include <math.h>
#include <string.h>
#include "../rowops.h"
#include "simd.h"

#if VL > 1
#define FMA1(a, b, c) vfma((a), (b), (c))
#else
/* the scalar build has no FMA instruction: fmaf keeps the single rounding of the vector paths */
#define FMA1(a, b, c) fmaf((a), (b), (c))
#endif

/* y[0:n] = f * x[0:n] (f == 1: a copy) */
static inline void scale_copy(float* y, const float* x, float f, int64_t n) {
  if (f == 1.0f) {
    memmove(y, x, (size_t)n * sizeof(float));
    return;
  }
  const vf vf_ = vset1(f);
  int64_t j = 0;
  for (; j + VL <= n; j += VL) vstore(y + j, vmul(vf_, vload(x + j)));
  if (j < n) vstoret(y + j, vmul(vf_, vloadt(x + j, (int)(n - j), 0.0f)), (int)(n - j));
}

void ISA_FN(dsv3_gather_rows)(const float* src, const int32_t* idx, const float* scale, float* dst, int64_t r0,
                              int64_t r1, int64_t cols) {
  for (int64_t i = r0; i < r1; i++)
    scale_copy(dst + i * cols, src + (int64_t)idx[i] * cols, scale ? scale[i] : 1.0f, cols);
}

void ISA_FN(dsv3_scatter_add_rows)(const float* src, const int32_t* idx, const float* scale, float* dst,
                                   int64_t rows, int64_t cols, int64_t c0, int64_t c1) {
  for (int64_t i = 0; i < rows; i++) {
    const float* s = src + i * cols;
    float* d = dst + (int64_t)idx[i] * cols;
    const float f = scale ? scale[i] : 1.0f;
    const vf vf_ = vset1(f);
    int64_t j = c0;
    for (; j + VL <= c1; j += VL) vstore(d + j, FMA1(vf_, vload(s + j), vload(d + j)));
#if VL > 1
    if (j < c1) {
      const int t = (int)(c1 - j);
      vstoret(d + j, vfma(vf_, vloadt(s + j, t, 0.0f), vloadt(d + j, t, 0.0f)), t);
    }
#endif
  }
}

void ISA_FN(dsv3_row_dot)(const float* a, const float* b, float* out, int64_t r0, int64_t r1, int64_t cols) {
  for (int64_t i = r0; i < r1; i++) {
    const float* x = a + i * cols;
    const float* y = b + i * cols;
    double total = 0;
    for (int64_t blk = 0; blk < cols; blk += SIMD_BLOCK) {
      const int64_t e = blk + SIMD_BLOCK < cols ? blk + SIMD_BLOCK : cols;
      vf s0 = vzero(), s1 = vzero();
      int64_t j = blk;
      for (; j + 2 * VL <= e; j += 2 * VL) {
        s0 = vfma(vload(x + j), vload(y + j), s0);
        s1 = vfma(vload(x + j + VL), vload(y + j + VL), s1);
      }
      for (; j + VL <= e; j += VL) s0 = vfma(vload(x + j), vload(y + j), s0);
#if VL > 1
      if (j < e) s1 = vfma(vloadt(x + j, (int)(e - j), 0.0f), vloadt(y + j, (int)(e - j), 0.0f), s1);
#endif
      total += (double)vhsum(vadd(s0, s1));
    }
    out[i] = (float)total;
  }
}

void ISA_FN(dsv3_scale_rows)(const float* x, const float* s, float* y, int64_t r0, int64_t r1, int64_t cols) {
  for (int64_t i = r0; i < r1; i++) {
    const float f = s[i];
    const float* xi = x + i * cols;
    float* yi = y + i * cols;
    const vf vf_ = vset1(f);
    int64_t j = 0;
    for (; j + VL <= cols; j += VL) vstore(yi + j, vmul(vf_, vload(xi + j)));
    if (j < cols) vstoret(yi + j, vmul(vf_, vloadt(xi + j, (int)(cols - j), 0.0f)), (int)(cols - j));
  }
}

void ISA_FN(dsv3_copy_strided)(const float* src, float* dst, int64_t i0, int64_t i1, int64_t n1, int64_t cols,
                               int64_t ss0, int64_t ss1, int64_t ds0, int64_t ds1, int accumulate) {
  for (int64_t i = i0; i < i1; i++) {
    for (int64_t j = 0; j < n1; j++) {
      const float* s = src + i * ss0 + j * ss1;
      float* d = dst + i * ds0 + j * ds1;
      int64_t c = 0;
      if (accumulate) {
        for (; c + VL <= cols; c += VL) vstore(d + c, vadd(vload(d + c), vload(s + c)));
#if VL > 1
        if (c < cols) vstoret(d + c, vadd(vloadt(d + c, (int)(cols - c), 0.0f), vloadt(s + c, (int)(cols - c), 0.0f)), (int)(cols - c));
#endif
      } else {
        for (; c + VL <= cols; c += VL) vstore(d + c, vload(s + c));
#if VL > 1
        if (c < cols) vstoret(d + c, vloadt(s + c, (int)(cols - c), 0.0f), (int)(cols - c));
#endif
      }
    }
  }
}

void ISA_FN(dsv3_rope_rows)(const float* x, float* y, int64_t r0, int64_t r1, int64_t cols, int64_t start,
                            int64_t dr, int64_t mid, int64_t T, const float* cos, const float* sin, float sign) {
  const int64_t half = dr / 2;
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    if (xr != yr) {
      memcpy(yr, xr, (size_t)start * sizeof(float));
      memcpy(yr + start + dr, xr + start + dr, (size_t)(cols - start - dr) * sizeof(float));
    }
    const int64_t t = (r / mid) % T;
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    const float* a = xr + start;
    float* o = yr + start;
    /* pairs one by one (dr is small: MLA's is 64 at most). Products of two floats are exact in
     * double, so each output is the float rounding of the double sum, as in the reference. */
    for (int64_t i = 0; i < half; i++) {
      const double ci = c[i], si = (double)(sign * s[i]);
      const double u = a[2 * i], v = a[2 * i + 1];
      o[2 * i] = (float)(u * ci - v * si);
      o[2 * i + 1] = (float)(u * si + v * ci);
    }
  }
}
