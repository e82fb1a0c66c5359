#include "cpu.h"
#include <stdlib.h>
#include <string.h>

static int g_isa = -1;
static int g_detected = -1;

static int detect(void) {
  __builtin_cpu_init();
  if (dsv3_has_avx512()) return DSV3_ISA_LEVEL_AVX512;
  if (dsv3_has_avx2_fma()) return DSV3_ISA_LEVEL_AVX2;
  return DSV3_ISA_LEVEL_SCALAR;
}

int dsv3_has_avx2_fma(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
/* DSV3_EMULATE_AVX512: verification build only (scripts/verify-avx512.sh), whose AVX-512 kernels
 * are SIMDe emulations that run on any AVX2 CPU: report AVX-512 (with bf16 and vbmi) present. */
int dsv3_has_avx512(void) {
#ifdef DSV3_EMULATE_AVX512
  return 1;
#endif
  __builtin_cpu_init();
  return dsv3_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
int dsv3_has_avx512_bf16(void) {
#ifdef DSV3_EMULATE_AVX512
  return 1;
#endif
  __builtin_cpu_init();
  return dsv3_has_avx512() && __builtin_cpu_supports("avx512bf16");
}
int dsv3_has_avx512_vbmi(void) {
#ifdef DSV3_EMULATE_AVX512
  return 1;
#endif
  __builtin_cpu_init();
  return dsv3_has_avx512() && __builtin_cpu_supports("avx512vbmi");
}

int dsv3_has_gfni(void) {
#ifdef DSV3_EMULATE_AVX512
  return 1;
#endif
  __builtin_cpu_init();
  return dsv3_has_avx512() && __builtin_cpu_supports("gfni");
}

const char* dsv3_isa_name(int level) {
  return level == DSV3_ISA_LEVEL_AVX512 ? "avx512" : level == DSV3_ISA_LEVEL_AVX2 ? "avx2" : "scalar";
}

int dsv3_isa(void) {
  if (g_isa >= 0) return g_isa;
  g_detected = detect();
  g_isa = g_detected;
  const char* env = getenv("DSV3_ISA");
  if (env && *env) {
    int want = !strcmp(env, "scalar") ? DSV3_ISA_LEVEL_SCALAR : !strcmp(env, "avx2") ? DSV3_ISA_LEVEL_AVX2
             : !strcmp(env, "avx512") ? DSV3_ISA_LEVEL_AVX512 : g_detected;
    if (want < g_isa) g_isa = want;
  }
  return g_isa;
}

int dsv3_set_isa(int level) {
  if (g_detected < 0) dsv3_isa();
  if (level > g_detected || level < 0) return 0;
  g_isa = level;
  return 1;
}
