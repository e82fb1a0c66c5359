/* Per-ISA naming. Every file in isa/ is compiled three times (see binding.gyp); ISA_FN(f)
 * gives each copy of a function its own name: f_avx512, f_avx2, f_scalar. The dispatch code
 * (outside isa/) picks one at load time from cpuid (cpu.h). */
#ifndef DSV3_ISA_H
#define DSV3_ISA_H
#include <stddef.h>
#include <stdint.h>

#if defined(DSV3_ISA_AVX512)
#define ISA_FN(n) n##_avx512
#define ISA_NAME "avx512"
#elif defined(DSV3_ISA_AVX2)
#define ISA_FN(n) n##_avx2
#define ISA_NAME "avx2"
#else
#define ISA_FN(n) n##_scalar
#define ISA_NAME "scalar"
#endif

/* Declare the three copies of a kernel: DECLARE_ISA(void, foo, (int a, float* b)); */
#define DECLARE_ISA(ret, name, args) \
  ret name##_avx512 args;            \
  ret name##_avx2 args;              \
  ret name##_scalar args;

/* Pick the copy for the active ISA: SELECT_ISA(foo) evaluates to a function pointer. */
#define SELECT_ISA(name) \
  (dsv3_isa() == DSV3_ISA_LEVEL_AVX512 ? name##_avx512 : dsv3_isa() == DSV3_ISA_LEVEL_AVX2 ? name##_avx2 : name##_scalar)

#endif
