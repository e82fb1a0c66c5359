/* The FP8 training GEMM's decode step (fp8_train_gemm.c, float32 path: AVX-512 without bf16,
 * scalar): E4M3 codes to float32, COLS layouts of A transposed on the way (8x8 blocks in
 * registers); the fp32 GEMM's packers then reproduce the codes exactly in their micro-panels. */
#include "fp8_train_decode.h"
#include "fp8_weight_isa.h" /* gemm_isa.h (gemm_transpose8), E4M3 decoders, fp8_csr_* */
#include "threadpool.h"

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* out[0..n) = e4m3(codes[0..n)) as float32 */
static void decode_f32(const uint8_t* c, int64_t n, float* out) {
  int64_t i = 0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, fp8_dec8_exact(c + i, one));
#endif
  for (; i < n; i++) out[i] = fp8_e4m3_table[c[i]];
}

/* out [rows][cols] (row stride ldo) = float32 values of codes stored transposed, [cols][rows];
 * rows [r0, r1) */
static void decode_f32_t(const uint8_t* c, int64_t rows, int64_t cols, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  int64_t r = r0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; r + 8 <= r1; r += 8) {
    int64_t p = 0;
    for (; p + 8 <= cols; p += 8) {
      __m256 v[8];
      for (int q = 0; q < 8; q++) v[q] = fp8_dec8_exact(c + (p + q) * rows + r, one);
      gemm_transpose8(v);
      for (int q = 0; q < 8; q++) _mm256_storeu_ps(out + (r + q) * ldo + p, v[q]);
    }
    for (; p < cols; p++)
      for (int q = 0; q < 8; q++) out[(r + q) * ldo + p] = fp8_e4m3_table[c[p * rows + r + q]];
  }
#endif
  for (; r < r1; r++)
    for (int64_t p = 0; p < cols; p++) out[r * ldo + p] = fp8_e4m3_table[c[p * rows + r]];
}

typedef struct {
  const f8t_prob* P;
  float* af;   /* decoded A [m][k] */
  void* bd;    /* decoded B, stored layout, float32 */
  int64_t per; /* rows per decode task */
  int64_t na, nb_tasks;
} dec_ctx;

static void decode_task(void* ctx, int t, int thread) {
  (void)thread;
  const dec_ctx* D = (const dec_ctx*)ctx;
  const f8t_prob* P = D->P;
  const unsigned csr = fp8_csr_enter(); /* the arithmetic decode goes through float32 denormals */
  if (t < D->na) {
    const int64_t r0 = t * D->per, r1 = min64(P->m, r0 + D->per);
    if (P->a.layout & 1) decode_f32_t(P->a.codes, P->m, P->k, r0, r1, D->af, P->k);
    else decode_f32(P->a.codes + r0 * P->k, (r1 - r0) * P->k, D->af + r0 * P->k);
  } else {
    const int64_t total = P->n * P->k, chunk = (total + D->nb_tasks - 1) / D->nb_tasks;
    const int64_t e0 = (t - D->na) * chunk, e1 = min64(total, e0 + chunk);
    if (e0 < e1) {
      decode_f32(P->b.codes + e0, e1 - e0, (float*)D->bd + e0);
    }
  }
  fp8_csr_leave(csr);
}

/* A's codes to float32 [m][k] (af), B's to float32 in their stored layout (bd), on up to T
 * pool threads: A in row chunks, B in element chunks */
void ISA_FN(fp8_train_decode)(const f8t_prob* P, int T, float* af, void* bd) {
  dec_ctx D = {P, af, bd, 0, 0, 0};
  const int64_t work = (P->m + P->n) * P->k;
  const int64_t tasks = T > 1 && work >= 65536 ? 4 * (int64_t)T : 1;
  D.na = min64(P->m, tasks);
  D.per = (P->m + D.na - 1) / D.na;
  D.na = (P->m + D.per - 1) / D.per;
  D.nb_tasks = tasks;
  if (D.na + D.nb_tasks > 1) dsv3_parallel_for((int)(D.na + D.nb_tasks), decode_task, &D);
  else
    for (int t = 0; t < D.na + D.nb_tasks; t++) decode_task(&D, t, 0);
}
