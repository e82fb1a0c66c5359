/* Elementwise kernels on contiguous buffers: binary ops, axpy, and the SwiGLU core
 * y = silu(g) * u with its backward. Each reads an element's inputs before writing that
 * element, so outputs may alias inputs. The bindings split [0, n) across the thread pool. */
#include "../fused.h"
#include "simd.h"

#define EW_LOOP(EXPR_V)                                                    \
  do {                                                                     \
    int64_t i = 0;                                                         \
    for (; i + VL <= n; i += VL) {                                         \
      const vf av = vload(a + i), bv = vload(b + i);                       \
      vstore(out + i, EXPR_V);                                             \
    }                                                                      \
    if (i < n) {                                                           \
      const int t = (int)(n - i);                                          \
      const vf av = vloadt(a + i, t, 1.0f), bv = vloadt(b + i, t, 1.0f);   \
      vstoret(out + i, EXPR_V, t);                                         \
    }                                                                      \
  } while (0)

/* out = a (op) b: 0 add, 1 sub, 2 mul, 3 div (the binding rejects other ops). Float32
 * add/sub/mul/div are correctly rounded, so these match the float64 reference exactly. */
void ISA_FN(dsv3_binary)(int op, const float* a, const float* b, float* out, int64_t n) {
  switch (op) {
    case 0: EW_LOOP(vadd(av, bv)); break;
    case 1: EW_LOOP(vsub(av, bv)); break;
    case 2: EW_LOOP(vmul(av, bv)); break;
    default: EW_LOOP(vdiv(av, bv)); break;
  }
}

/* y += alpha * x */
void ISA_FN(dsv3_axpy)(float alpha, const float* x, float* y, int64_t n) {
  const vf va = vset1(alpha);
  int64_t i = 0;
  for (; i + 2 * VL <= n; i += 2 * VL) {
    vstore(y + i, vfma(va, vload(x + i), vload(y + i)));
    vstore(y + i + VL, vfma(va, vload(x + i + VL), vload(y + i + VL)));
  }
  for (; i + VL <= n; i += VL) vstore(y + i, vfma(va, vload(x + i), vload(y + i)));
  if (i < n) {
    const int t = (int)(n - i);
    vstoret(y + i, vfma(va, vloadt(x + i, t, 0), vloadt(y + i, t, 0)), t);
  }
}

/* silu(z) * u = (z / (1 + exp(-z))) * u; exp(-z) = +inf for z < -88.4 gives -0, the limit */
static inline vf silu_mul_v(vf z, vf u) {
  return vmul(vdiv(z, vadd(vset1(1.0f), vexp(vsub(vzero(), z)))), u);
}

void ISA_FN(dsv3_silu_mul)(const float* g, const float* u, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + VL <= n; i += VL) vstore(y + i, silu_mul_v(vload(g + i), vload(u + i)));
  if (i < n) {
    const int t = (int)(n - i);
    vstoret(y + i, silu_mul_v(vloadt(g + i, t, 0), vloadt(u + i, t, 0)), t);
  }
}

/* s = sigmoid(z): du = dy * z * s, dg = dy * u * s * (1 + z * (1 - s)) */
static inline void silu_mul_bwd_v(vf z, vf u, vf dy, vf* dg, vf* du) {
  const vf one = vset1(1.0f);
  const vf s = vdiv(one, vadd(one, vexp(vsub(vzero(), z))));
  *du = vmul(dy, vmul(z, s));
  *dg = vmul(vmul(dy, u), vmul(s, vfma(z, vsub(one, s), one)));
}

void ISA_FN(dsv3_silu_mul_bwd)(const float* g, const float* u, const float* dy, float* dg, float* du, int64_t n) {
  int64_t i = 0;
  vf a, b;
  for (; i + VL <= n; i += VL) {
    silu_mul_bwd_v(vload(g + i), vload(u + i), vload(dy + i), &a, &b);
    vstore(dg + i, a);
    vstore(du + i, b);
  }
  if (i < n) {
    const int t = (int)(n - i);
    silu_mul_bwd_v(vloadt(g + i, t, 0), vloadt(u + i, t, 0), vloadt(dy + i, t, 0), &a, &b);
    vstoret(dg + i, a, t);
    vstoret(du + i, b, t);
  }
}
