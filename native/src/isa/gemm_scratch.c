/* GEMM scratch memory and the A pre-passes that fill it: the per-thread buffers the driver
 * packs into (gemm_driver.c), and, for the bf16 problem without VDPBF16PS (fp32 micro-kernel)
 * with float32 A, A rounded to the bf16 grid once into a float32 copy that the loop nest then
 * reads like float32 A. (bf16 bits A is widened in the packing: gemm_pack.c.) */
#include <stdlib.h>
#include "gemm_isa.h"
#include "memory.h"

/* Scratch memory per OS thread (pool workers are persistent, so this is allocated once per
 * thread and size, never in steady state). Thread-local rather than indexed by pool slot, so
 * concurrent callers (nested calls run inline, JS worker threads) never share a buffer. From
 * the huge-page allocator (memory.h): the packed B block (up to 2 MB) is read once per row
 * block, panel after panel. */
static _Thread_local void* tl_buf[5];
static _Thread_local size_t tl_cap[5];

void* ISA_FN(gemm_scratch)(int slot, size_t bytes) {
  if (bytes < 64) bytes = 64;
  if (tl_cap[slot] >= bytes) return tl_buf[slot];
  dsv3_huge_free(tl_buf[slot], tl_cap[slot]);
  tl_buf[slot] = NULL;
  tl_cap[slot] = 0;
  const size_t sz = (bytes + 4095) & ~(size_t)4095;
  void* p = dsv3_huge_alloc(sz);
  if (!p) return NULL;
  tl_buf[slot] = p;
  tl_cap[slot] = sz;
  return p;
}

/* A (rows stored rows x cols, stride lda) rounded to the bf16 grid into dst (stride cols),
 * as float32: gemm_round_bf16 per element, 8 lanes at a time where there are vectors. */
static void round_a_grid(const float* a, int64_t lda, int64_t rows, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; r++) {
    const float* s = a + r * lda;
    float* d = dst + r * cols;
    int64_t e = 0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
    for (; e + 8 <= cols; e += 8) _mm256_storeu_ps(d + e, gemm_round_bf16_v8(_mm256_loadu_ps(s + e)));
#endif
    for (; e < cols; e++) d[e] = gemm_round_bf16(s[e]);
  }
}

/* The bf16 problem without VDPBF16PS: A rounded to the bf16 grid once, into a float32 copy
 * (scratch slot 4, this thread's), which the loop nest then packs as plain copies or reads in
 * place like fp32 A. 0, or -1 when the copy could not be allocated. */
int ISA_FN(gemm_round_a_prepass)(gemm_prob* P) {
  const int64_t rows = P->ta ? P->k : P->m, cols = P->ta ? P->m : P->k;
  float* ar = (float*)ISA_FN(gemm_scratch)(4, (size_t)(rows * cols) * sizeof(float));
  if (!ar) return -1;
  round_a_grid(P->a, P->lda, rows, cols, ar);
  P->a = ar;
  P->lda = cols;
  P->around = 1;
  return 0;
}
