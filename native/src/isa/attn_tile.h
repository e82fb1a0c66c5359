/* The small matrix product behind every tile of flash attention (isa/attention.c):
 *
 *   C[m][0..N) (+)= sum_k A(m, k) * B[k][0..N),   A(m, k) = A[m*ars + k*acs],
 *   B row k at B + k*ldb, C row m at C + m*ldc, each row N contiguous floats.
 *
 * A is read one scalar at a time (broadcast) with arbitrary row/column strides, so the same
 * routine multiplies by a tile or by its transpose without copying; B and C rows are
 * vectors. Register blocking: 6 rows x 2 vectors (12 accumulators) when N > VL, 8 rows x 1
 * vector when N <= VL (decode-sized tiles). Columns past N are never read or written (masked
 * loads/stores), so B and C may be rows of the caller's strided tensors. */
#ifndef DSV3_ISA_ATTN_TILE_H
#define DSV3_ISA_ATTN_TILE_H
#include "simd.h"

/* One mr x nv tile (mr, nv compile-time constants after inlining); nn = valid columns. */
SIMD_INLINE void mm_tile(const int mr, const int nv, const int nn, const int64_t K, const float* A, const int64_t ars,
                         const int64_t acs, const float* B, const int64_t ldb, float* C, const int64_t ldc,
                         const int acc) {
  vf c0[8], c1[8];
#pragma GCC unroll 8
  for (int i = 0; i < mr; i++) c0[i] = c1[i] = vzero();
  const int last = nn - (nv - 1) * VL; /* lanes of the last vector, 1..VL */
  if (last == VL) {
    for (int64_t k = 0; k < K; k++) {
      const float* b = B + k * ldb;
      const float* a = A + k * acs;
      const vf b0 = vload(b), b1 = nv > 1 ? vload(b + VL) : b0;
#pragma GCC unroll 8
      for (int i = 0; i < mr; i++) {
        const vf ai = vset1(a[i * ars]);
        c0[i] = vfma(ai, b0, c0[i]);
        if (nv > 1) c1[i] = vfma(ai, b1, c1[i]);
      }
    }
  } else {
    const vmask_t mk = vmask(last);
    for (int64_t k = 0; k < K; k++) {
      const float* b = B + k * ldb;
      const float* a = A + k * acs;
      const vf b0 = nv > 1 ? vload(b) : vloadm(b, mk), b1 = nv > 1 ? vloadm(b + VL, mk) : b0;
#pragma GCC unroll 8
      for (int i = 0; i < mr; i++) {
        const vf ai = vset1(a[i * ars]);
        c0[i] = vfma(ai, b0, c0[i]);
        if (nv > 1) c1[i] = vfma(ai, b1, c1[i]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < mr; i++) {
    float* c = C + i * ldc;
    if (nv == 1) {
      if (last == VL) vstore(c, acc ? vadd(vload(c), c0[i]) : c0[i]);
      else vstoret(c, acc ? vadd(vloadt(c, last, 0), c0[i]) : c0[i], last);
    } else {
      vstore(c, acc ? vadd(vload(c), c0[i]) : c0[i]);
      if (last == VL) vstore(c + VL, acc ? vadd(vload(c + VL), c1[i]) : c1[i]);
      else vstoret(c + VL, acc ? vadd(vloadt(c + VL, last, 0), c1[i]) : c1[i], last);
    }
  }
}

#define MM_TILE(mr, nv) mm_tile(mr, nv, nn, K, A + m0 * ars, ars, acs, B + n0, ldb, C + m0 * ldc + n0, ldc, acc)

/* C (+)= A.B as above; acc = 0 overwrites C, acc = 1 adds to it. */
static void mm(const int64_t M, const int64_t N, const int64_t K, const float* A, const int64_t ars,
               const int64_t acs, const float* B, const int64_t ldb, float* C, const int64_t ldc, const int acc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!acc)
      for (int64_t m = 0; m < M; m++) memset(C + m * ldc, 0, (size_t)N * sizeof(float));
    return;
  }
  for (int64_t n0 = 0; n0 < N; n0 += 2 * VL) {
    const int nn = (int)(N - n0 < 2 * VL ? N - n0 : 2 * VL);
    int64_t m0 = 0;
    if (nn > VL) {
      /* 6 x 2 vectors = 12 accumulators (of 16 registers): enough independent FMAs to cover
       * the FMA latency on both pipes. The last 7..11 rows are split evenly (4+3 .. 6+5) rather
       * than leaving a 1..5-row tile with too few accumulators to keep the pipes busy. */
      for (; M - m0 >= 12 || M - m0 == 6; m0 += 6) MM_TILE(6, 2);
      switch (M - m0) {
        case 11: MM_TILE(6, 2); m0 += 6; MM_TILE(5, 2); break;
        case 10: MM_TILE(5, 2); m0 += 5; MM_TILE(5, 2); break;
        case 9: MM_TILE(5, 2); m0 += 5; MM_TILE(4, 2); break;
        case 8: MM_TILE(4, 2); m0 += 4; MM_TILE(4, 2); break;
        case 7: MM_TILE(4, 2); m0 += 4; MM_TILE(3, 2); break;
        case 5: MM_TILE(5, 2); break;
        case 4: MM_TILE(4, 2); break;
        case 3: MM_TILE(3, 2); break;
        case 2: MM_TILE(2, 2); break;
        case 1: MM_TILE(1, 2); break;
        default: break;
      }
    } else {
      for (; m0 + 8 <= M; m0 += 8) MM_TILE(8, 1);
      switch (M - m0) {
        case 7: MM_TILE(7, 1); break;
        case 6: MM_TILE(6, 1); break;
        case 5: MM_TILE(5, 1); break;
        case 4: MM_TILE(4, 1); break;
        case 3: MM_TILE(3, 1); break;
        case 2: MM_TILE(2, 1); break;
        case 1: MM_TILE(1, 1); break;
        default: break;
      }
    }
  }
}
#undef MM_TILE
#endif
