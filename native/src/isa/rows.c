/* Fused row kernels: softmax, log-softmax, RMSNorm (forward and backward) and cross-entropy
 * over large vocabularies. Each function processes rows [r0, r1) of a row-major [rows, cols]
 * problem (the bindings hand row ranges to the thread pool).
 *
 * Accuracy: reductions keep float vector partial sums inside blocks of SIMD_BLOCK elements
 * and add the blocks in double (simd.h); exp is vexp (~1 ulp). Outputs match the float64
 * reference to a few float32 ulps of the row's scale.
 *
 * Aliasing: every kernel reads an element before it writes the same index and finishes its
 * reductions before its first write, so y may alias x (and dx may alias dy). */
#include "../bf16_convert.h"
#include "../fused.h"
#include "simd.h"

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* max over x[0, n). A NaN may be dropped here (MAXPS keeps the second operand), but the
 * exp/sum pass that follows turns it into a NaN result, as in the reference. */
static float row_max(const float* restrict x, int64_t n) {
  vf m0 = vset1(-INFINITY), m1 = m0;
  int64_t j = 0;
  for (; j + 2 * VL <= n; j += 2 * VL) {
    m0 = vmax(m0, vload(x + j));
    m1 = vmax(m1, vload(x + j + VL));
  }
  for (; j + VL <= n; j += VL) m0 = vmax(m0, vload(x + j));
  if (j < n) m1 = vmax(m1, vloadt(x + j, (int)(n - j), -INFINITY));
  return vhmax(vmax(m0, m1));
}

/* sum of exp(x - m) over [0, n); also stores the exponentials in y when y != NULL */
static double sum_exp(const float* restrict x, float* y, int64_t n, float m) {
  const vf vm = vset1(m);
  double total = 0;
  for (int64_t b = 0; b < n; b += SIMD_BLOCK) {
    const int64_t e = min64(n, b + SIMD_BLOCK);
    vf a0 = vzero(), a1 = vzero();
    int64_t j = b;
    for (; j + 2 * VL <= e; j += 2 * VL) {
      vf e0 = vexp(vsub(vload(x + j), vm)), e1 = vexp(vsub(vload(x + j + VL), vm));
      if (y) {
        vstore(y + j, e0);
        vstore(y + j + VL, e1);
      }
      a0 = vadd(a0, e0);
      a1 = vadd(a1, e1);
    }
    for (; j + VL <= e; j += VL) {
      vf e0 = vexp(vsub(vload(x + j), vm));
      if (y) vstore(y + j, e0);
      a0 = vadd(a0, e0);
    }
    if (j < e) {
      vf e0 = vexp(vsub(vloadt(x + j, (int)(e - j), -INFINITY), vm));
      if (y) vstoret(y + j, e0, (int)(e - j));
      a1 = vadd(a1, e0);
    }
    total += (double)vhsum(vadd(a0, a1));
  }
  return total;
}

/* log-sum-exp of x[0, n) in one pass over memory, the online softmax of Milakov & Gimelshein
 * (2018) applied per block: each L1-resident block gets its own max bm and sum bs, and the
 * running (m, s) is rescaled when a block raises the max: s = s*exp(m - bm) + bs. */
static double row_lse(const float* restrict x, int64_t n) {
  double m = -INFINITY, s = 0;
  for (int64_t b = 0; b < n; b += SIMD_BLOCK) {
    const int64_t len = min64(n - b, SIMD_BLOCK);
    const float bm = row_max(x + b, len);
    if (bm != bm) return bm;
    if (bm == -INFINITY) continue; /* the block contributes exp(-inf) = 0 */
    const double bs = sum_exp(x + b, NULL, len, bm);
    if (bm > m) {
      s = s * exp(m - bm) + bs;
      m = bm;
    } else {
      s += bs * exp(bm - m);
    }
  }
  if (m == -INFINITY) return -INFINITY;
  return m + log(s);
}

/* dot(a, b) over [0, n), blocked float -> double */
static double row_dot(const float* restrict a, const float* restrict b, int64_t n) {
  double total = 0;
  for (int64_t k = 0; k < n; k += SIMD_BLOCK) {
    const int64_t e = min64(n, k + SIMD_BLOCK);
    vf a0 = vzero(), a1 = vzero();
    int64_t j = k;
    for (; j + 2 * VL <= e; j += 2 * VL) {
      a0 = vfma(vload(a + j), vload(b + j), a0);
      a1 = vfma(vload(a + j + VL), vload(b + j + VL), a1);
    }
    for (; j + VL <= e; j += VL) a0 = vfma(vload(a + j), vload(b + j), a0);
    if (j < e) a1 = vfma(vloadt(a + j, (int)(e - j), 0), vloadt(b + j, (int)(e - j), 0), a1);
    total += (double)vhsum(vadd(a0, a1));
  }
  return total;
}

/* sum of a[0, n) */
static double row_sum(const float* restrict a, int64_t n) {
  double total = 0;
  for (int64_t k = 0; k < n; k += SIMD_BLOCK) {
    const int64_t e = min64(n, k + SIMD_BLOCK);
    vf a0 = vzero(), a1 = vzero();
    int64_t j = k;
    for (; j + 2 * VL <= e; j += 2 * VL) {
      a0 = vadd(a0, vload(a + j));
      a1 = vadd(a1, vload(a + j + VL));
    }
    for (; j + VL <= e; j += VL) a0 = vadd(a0, vload(a + j));
    if (j < e) a1 = vadd(a1, vloadt(a + j, (int)(e - j), 0));
    total += (double)vhsum(vadd(a0, a1));
  }
  return total;
}

/* y = x * s + t over [0, n) (s, t broadcast); used for the final scale/shift passes */
static void row_affine(const float* x, float* y, int64_t n, float s, float t) {
  const vf vs = vset1(s), vt = vset1(t);
  int64_t j = 0;
  for (; j + VL <= n; j += VL) vstore(y + j, vfma(vload(x + j), vs, vt));
  if (j < n) vstoret(y + j, vfma(vloadt(x + j, (int)(n - j), 0), vs, vt), (int)(n - j));
}

/* softmax: max pass (reads the row from memory), exp pass (stores e = exp(x - max) and sums
 * it, the row now in cache), scale pass (y = e / sum). */
void ISA_FN(dsv3_softmax_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  (void)part;
  const int64_t n = a->cols;
  for (int64_t r = r0; r < r1; r++) {
    const float* x = a->x + r * n;
    float* y = a->out + r * n;
    const float m = row_max(x, n);
    const double s = sum_exp(x, y, n, m);
    row_affine(y, y, n, (float)(1.0 / s), 0.0f);
  }
}

/* dx = y * (dy - dot(dy, y)) */
void ISA_FN(dsv3_softmax_bwd_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  (void)part;
  const int64_t n = a->cols;
  for (int64_t r = r0; r < r1; r++) {
    const float* y = a->y + r * n;
    const float* dy = a->dy + r * n;
    float* dx = a->out + r * n;
    const vf dot = vset1((float)row_dot(dy, y, n));
    int64_t j = 0;
    for (; j + VL <= n; j += VL) vstore(dx + j, vmul(vload(y + j), vsub(vload(dy + j), dot)));
    if (j < n) {
      const int t = (int)(n - j);
      vstoret(dx + j, vmul(vloadt(y + j, t, 0), vsub(vloadt(dy + j, t, 0), dot)), t);
    }
  }
}

/* y = x - logsumexp(x) */
void ISA_FN(dsv3_log_softmax_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  (void)part;
  const int64_t n = a->cols;
  for (int64_t r = r0; r < r1; r++) {
    const float* x = a->x + r * n;
    row_affine(x, a->out + r * n, n, 1.0f, (float)-row_lse(x, n));
  }
}

/* dx = dy - exp(y) * sum(dy) */
void ISA_FN(dsv3_log_softmax_bwd_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  (void)part;
  const int64_t n = a->cols;
  for (int64_t r = r0; r < r1; r++) {
    const float* y = a->y + r * n;
    const float* dy = a->dy + r * n;
    float* dx = a->out + r * n;
    const vf s = vset1((float)row_sum(dy, n));
    int64_t j = 0;
    for (; j + VL <= n; j += VL) vstore(dx + j, vfnma(vexp(vload(y + j)), s, vload(dy + j)));
    if (j < n) {
      const int t = (int)(n - j);
      vstoret(dx + j, vfnma(vexp(vloadt(y + j, t, 0)), s, vloadt(dy + j, t, 0)), t);
    }
  }
}

/* rstd = 1/sqrt(mean(x^2) + eps) (computed in double, rounded to float like the reference);
 * y = x * rstd * w; with out16 also the bf16 bits of y (dsv3_bf16_round of each row) */
void ISA_FN(dsv3_rms_norm_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  (void)part;
  const int64_t n = a->cols;
  const float* w = a->w;
  for (int64_t r = r0; r < r1; r++) {
    const float* x = a->x + r * n;
    float* y = a->out + r * n;
    const float rs = (float)(1.0 / sqrt(row_dot(x, x, n) / (double)n + (double)a->eps));
    a->rstd_out[r] = rs;
    const vf vr = vset1(rs);
    int64_t j = 0;
    for (; j + VL <= n; j += VL) vstore(y + j, vmul(vmul(vload(x + j), vr), vload(w + j)));
    if (j < n) {
      const int t = (int)(n - j);
      vstoret(y + j, vmul(vmul(vloadt(x + j, t, 0), vr), vloadt(w + j, t, 0)), t);
    }
    /* rmsNormBf16: the row's bf16 bits, rounded from the float32 y just written (still in L1),
     * so they equal bf16Round(y) bit for bit */
    if (a->out16) ISA_FN(dsv3_bf16_round)(y, a->out16 + r * n, n);
  }
}

/* dot = sum(dy*w*x); dx = rstd*dy*w - (rstd^3 * dot / cols) * x; part[j] = sum_r dy*x*rstd
 * (the binding adds the per-chunk parts into dw in a fixed order, so dw is deterministic). */
void ISA_FN(dsv3_rms_norm_bwd_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  const int64_t n = a->cols;
  const float* w = a->w;
  memset(part, 0, (size_t)n * sizeof(float));
  for (int64_t r = r0; r < r1; r++) {
    const float* x = a->x + r * n;
    const float* dy = a->dy + r * n;
    float* dx = a->out + r * n;
    const double rsd = a->rstd[r];
    if (n < 64) {
      /* short rows in double: there one element can dominate mean(x^2), and then dx is a
       * near-total cancellation of its two terms (for cols = 1 it is ~eps-sized) */
      double dot = 0;
      for (int64_t j = 0; j < n; j++) dot += (double)dy[j] * w[j] * x[j];
      const double cc = rsd * rsd * rsd * dot / (double)n;
      for (int64_t j = 0; j < n; j++) {
        const double g = dy[j], xv = x[j];
        part[j] += (float)(g * xv * rsd);
        dx[j] = (float)(rsd * g * w[j] - cc * xv);
      }
      continue;
    }
    /* sum(dy*w*x), blocked like row_dot */
    double dot = 0;
    for (int64_t k = 0; k < n; k += SIMD_BLOCK) {
      const int64_t e = min64(n, k + SIMD_BLOCK);
      vf acc = vzero();
      int64_t j = k;
      for (; j + VL <= e; j += VL) acc = vfma(vmul(vload(dy + j), vload(w + j)), vload(x + j), acc);
      if (j < e) {
        const int t = (int)(e - j);
        acc = vfma(vmul(vloadt(dy + j, t, 0), vloadt(w + j, t, 0)), vloadt(x + j, t, 0), acc);
      }
      dot += (double)vhsum(acc);
    }
    const vf vr = vset1((float)rsd), vc = vset1((float)(rsd * rsd * rsd * dot / (double)n));
    int64_t j = 0;
    for (; j + VL <= n; j += VL) {
      const vf g = vload(dy + j), xv = vload(x + j);
      vstore(part + j, vfma(vmul(g, xv), vr, vload(part + j)));
      vstore(dx + j, vfnma(vc, xv, vmul(vmul(vr, g), vload(w + j))));
    }
    if (j < n) {
      const int t = (int)(n - j);
      const vf g = vloadt(dy + j, t, 0), xv = vloadt(x + j, t, 0);
      vstoret(part + j, vfma(vmul(g, xv), vr, vloadt(part + j, t, 0)), t);
      vstoret(dx + j, vfnma(vc, xv, vmul(vmul(vr, g), vloadt(w + j, t, 0))), t);
    }
  }
}

/* lse = logsumexp(logits) in one pass (row_lse; probabilities are never stored);
 * loss = lse - logits[target], or 0 for an ignored row (target < 0). Targets were checked
 * against the vocabulary by the binding. */
void ISA_FN(dsv3_cross_entropy_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  (void)part;
  const int64_t n = a->cols;
  for (int64_t r = r0; r < r1; r++) {
    const float* x = a->x + r * n;
    const double l = row_lse(x, n);
    const int32_t t = a->targets[r];
    a->lse_out[r] = (float)l;
    a->loss_out[r] = t < 0 ? 0.0f : (float)(l - (double)x[t]);
  }
}

/* dlogits = exp(logits - lse) * dloss, minus dloss at the target; ignored rows are zero.
 * One read of the logits, one write of dlogits (which may alias the logits). */
void ISA_FN(dsv3_cross_entropy_bwd_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  (void)part;
  const int64_t n = a->cols;
  for (int64_t r = r0; r < r1; r++) {
    const float* x = a->x + r * n;
    float* g = a->out + r * n;
    const int32_t t = a->targets[r];
    if (t < 0) {
      memset(g, 0, (size_t)n * sizeof(float));
      continue;
    }
    const float d = a->dloss[r];
    const vf vl = vset1(a->lse[r]), vd = vset1(d);
    int64_t j = 0;
    for (; j + 2 * VL <= n; j += 2 * VL) {
      const vf e0 = vexp(vsub(vload(x + j), vl)), e1 = vexp(vsub(vload(x + j + VL), vl));
      vstore(g + j, vmul(e0, vd));
      vstore(g + j + VL, vmul(e1, vd));
    }
    for (; j + VL <= n; j += VL) vstore(g + j, vmul(vexp(vsub(vload(x + j), vl)), vd));
    if (j < n) {
      const int tl = (int)(n - j);
      vstoret(g + j, vmul(vexp(vsub(vloadt(x + j, tl, 0), vl)), vd), tl);
    }
    g[t] -= d;
  }
}

/* crossEntropyGradBf16 (the BF16 output head's forward and its logits gradient in one pass per
 * row): lse and loss as dsv3_cross_entropy_rows, then P - Y = exp(logits - lse) * 1, minus 1 at
 * the target (dsv3_cross_entropy_bwd_rows with dloss 1), written only as bf16 bits into out16
 * (rows ld16 apart; ignored rows: zeros). The float32 values go through a block on the stack
 * (in L1) and are rounded by dsv3_bf16_round, elementwise as the unfused kernels compute them,
 * so the bits equal crossEntropy + crossEntropyBackward + bf16RoundRows's bit for bit; the row
 * is read from memory once (its later passes hit L1) and the float32 gradient is never stored. */
#define CE_BF16_BLOCK 1024
void ISA_FN(dsv3_cross_entropy_grad_bf16_rows)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part) {
  (void)part;
  const int64_t n = a->cols;
  float buf[CE_BF16_BLOCK] __attribute__((aligned(64)));
  for (int64_t r = r0; r < r1; r++) {
    const float* x = a->x + r * n;
    uint16_t* g16 = a->out16 + r * a->ld16;
    const double l = row_lse(x, n);
    const int32_t t = a->targets[r];
    const float lf = (float)l;
    a->lse_out[r] = lf;
    a->loss_out[r] = t < 0 ? 0.0f : (float)(l - (double)x[t]);
    if (t < 0) {
      memset(g16, 0, (size_t)n * sizeof(uint16_t));
      continue;
    }
    const vf vl = vset1(lf), vd = vset1(1.0f);
    for (int64_t b = 0; b < n; b += CE_BF16_BLOCK) {
      const int64_t len = min64(n - b, CE_BF16_BLOCK);
      const float* xb = x + b;
      int64_t j = 0;
      for (; j + 2 * VL <= len; j += 2 * VL) {
        const vf e0 = vexp(vsub(vload(xb + j), vl)), e1 = vexp(vsub(vload(xb + j + VL), vl));
        vstore(buf + j, vmul(e0, vd));
        vstore(buf + j + VL, vmul(e1, vd));
      }
      for (; j + VL <= len; j += VL) vstore(buf + j, vmul(vexp(vsub(vload(xb + j), vl)), vd));
      if (j < len) {
        const int tl = (int)(len - j);
        vstoret(buf + j, vmul(vexp(vsub(vloadt(xb + j, tl, 0), vl)), vd), tl);
      }
      if (t >= b && t < b + len) buf[t - b] -= 1.0f;
      ISA_FN(dsv3_bf16_round)(buf, g16 + b, len);
    }
  }
}
