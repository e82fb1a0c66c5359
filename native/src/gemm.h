/* GEMM: C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C[m,n], row-major, fp32 accumulation.
 *
 * op(A) = A (stored [m,k], lda >= k) or A^T (stored [k,m], lda >= m); likewise op(B) with
 * B stored [k,n] (ldb >= n) or [n,k] (ldb >= k). beta == 0 overwrites C without reading it
 * (NaN garbage in C is ignored); alpha == 0 or k == 0 only scales C by beta (A, B unread).
 * gemm_bf16: B holds bfloat16 bit patterns; A is rounded to bf16 (round-to-nearest-even,
 * NaN kept quiet) before multiplying. C must not overlap A or B.
 * gemm_bf16ab: A and B both hold bfloat16 bit patterns (an A rounded once by the caller, e.g.
 * a saved activation or a gradient that two GEMMs read): gemm_bf16 of the widened A, without
 * its rounding work; on the VDPBF16PS path A is read in place where its tiles are narrow.
 *
 * Three compiled copies exist (isa/gemm_*.c, see isa.h); dsv3_gemm_f32 / dsv3_gemm_bf16 pick
 * the active ISA (and run the AVX-512 self-check on its first use, see gemm_napi.c). Callable
 * from other native kernels, also from inside a dsv3_parallel_for task (it then runs on the
 * calling thread only). */
#ifndef DSV3_GEMM_H
#define DSV3_GEMM_H
#include <stdint.h>
#include "isa.h"

DECLARE_ISA(int, dsv3_gemm_f32, (int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha,
                                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                                  float* c, int64_t ldc))
DECLARE_ISA(int, dsv3_gemm_bf16, (int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha,
                                   const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta,
                                   float* c, int64_t ldc))
DECLARE_ISA(int, dsv3_gemm_bf16ab, (int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha,
                                     const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta,
                                     float* c, int64_t ldc))

/* Dispatched entry points (gemm_napi.c). All return 0, or -1 if scratch memory could not be
 * allocated (C is then unspecified). */
int dsv3_gemm_f32(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
int dsv3_gemm_bf16(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc);
int dsv3_gemm_bf16ab(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
                      int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc);

/* The ISA level dsv3_gemm_f32 / dsv3_gemm_bf16 run at (dsv3_isa(), or AVX2 where the AVX-512
 * self-check failed): kernels built on the GEMV row functions use it to give the same results. */
int dsv3_gemm_active_level(void);

/* Compares the given ISA level's GEMMs with the scalar ones on small awkward problems
 * (all transposes, edges, several k blocks, alpha/beta, GEMV path, bf16). 1 = agree. */
int dsv3_gemm_selfcheck(int level);

/* Test hook for the AVX-512 build: 0 forces the widening bf16 path even where the CPU has
 * avx512_bf16 (1 = use VDPBF16PS when available, the default). */
extern int dsv3_gemm_allow_dpbf16;
/* Test / benchmark hook: 0 makes the bf16 GEMMs without VDPBF16PS always round A in packing;
 * 1 (the default) rounds it once into a float32 copy before the loop nest where the GEMM
 * chooses that (A transposed, or tiles narrow enough to read A in place). */
extern int dsv3_gemm_round_prepass;
#endif
