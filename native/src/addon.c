/* Node-API entry point of the dsv3 native compute core. Kernels only: math on buffers.
 * Each kernel family registers its own functions (binding files *_napi.c); a family that
 * is absent from a build is simply not registered (weak symbols), and the TypeScript side
 * falls back to the reference kernels for it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, RTLD_NODELETE */
#endif
#include <dlfcn.h>

#include "cpu.h"
#include "napi_util.h"
#include "threadpool.h"

typedef void (*register_fn)(napi_env env, napi_value exports);
/* one per kernel family; defined in the family's *_napi.c */
__attribute__((weak)) void dsv3_register_gemm(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_fused(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_fp8_weight(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_fp8_quant(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_elementwise(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_attention(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_bench(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_rowops(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_optim(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_gemm_batch(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_memory(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_mapped_file(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_bf16(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_fp8_train(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_moe_rows(napi_env env, napi_value exports);
__attribute__((weak)) void dsv3_register_moe_row(napi_env env, napi_value exports);

static napi_value js_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, dsv3_isa_name(dsv3_isa()), NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, "isa", v);
  napi_create_int32(env, dsv3_threads(), &v);
  napi_set_named_property(env, obj, "threads", v);
  napi_get_boolean(env, dsv3_has_avx2_fma(), &v);
  napi_set_named_property(env, obj, "avx2", v);
  napi_get_boolean(env, dsv3_has_avx512(), &v);
  napi_set_named_property(env, obj, "avx512", v);
  napi_get_boolean(env, dsv3_has_avx512_bf16(), &v);
  napi_set_named_property(env, obj, "avx512bf16", v);
  napi_get_boolean(env, dsv3_has_avx512_vbmi(), &v);
  napi_set_named_property(env, obj, "avx512vbmi", v);
  napi_get_boolean(env, dsv3_has_gfni(), &v);
  napi_set_named_property(env, obj, "gfni", v);
  return obj;
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int64_t n;
  if (dsv3_int(env, argv[0], &n, "threads")) return NULL;
  dsv3_set_threads((int)n);
  napi_value r;
  napi_create_int32(env, dsv3_threads(), &r);
  return r;
}

/* setPoolSpin(iters) -> the previous idle-spin length of the pool workers (threadpool.h) */
static napi_value js_set_pool_spin(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int64_t n;
  if (dsv3_int(env, argv[0], &n, "iters")) return NULL;
  napi_value r;
  napi_create_int32(env, dsv3_set_pool_spin(n < 0 ? 0 : n > 100000000 ? 100000000 : (int)n), &r);
  return r;
}

/* setIsa('scalar'|'avx2'|'avx512') -> boolean (false if this CPU lacks it) */
static napi_value js_set_isa(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  char buf[16];
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], buf, sizeof buf, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "dsv3 native: setIsa expects a string");
    return NULL;
  }
  int level = buf[0] == 's' ? DSV3_ISA_LEVEL_SCALAR : (buf[0] == 'a' && buf[3] == '2') ? DSV3_ISA_LEVEL_AVX2 : DSV3_ISA_LEVEL_AVX512;
  napi_value r;
  napi_get_boolean(env, dsv3_set_isa(level), &r);
  return r;
}

/* The thread pool (threadpool.c) is process-wide: its worker threads are created once and live
 * as long as the process, sleeping between jobs. When the addon is loaded only by a
 * worker_threads Worker, Node unloads it (dlclose) when that Worker exits, and the pool's
 * threads would then wake into unmapped code (a segfault). Loading ourselves once more with
 * RTLD_NODELETE keeps the library mapped until the process exits. Failure is harmless (the
 * addon then behaves as before), so it is not reported. */
static void pin_library(void) {
  static int pinned = 0;
  if (pinned) return;
  Dl_info info;
  if (dladdr((void*)&pin_library, &info) && info.dli_fname && dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE)) pinned = 1;
}

static napi_value init(napi_env env, napi_value exports) {
  pin_library();
  dsv3_export(env, exports, "info", js_info);
  dsv3_export(env, exports, "setThreads", js_set_threads);
  dsv3_export(env, exports, "setPoolSpin", js_set_pool_spin);
  dsv3_export(env, exports, "setIsa", js_set_isa);
  register_fn families[] = {dsv3_register_gemm, dsv3_register_fused, dsv3_register_fp8_weight, dsv3_register_fp8_quant,
                            dsv3_register_elementwise, dsv3_register_attention, dsv3_register_bench,
                            dsv3_register_rowops, dsv3_register_optim, dsv3_register_gemm_batch,
                            dsv3_register_memory, dsv3_register_mapped_file, dsv3_register_bf16, dsv3_register_fp8_train,
                            dsv3_register_moe_rows, dsv3_register_moe_row};
  for (unsigned i = 0; i < sizeof families / sizeof families[0]; i++)
    if (families[i]) families[i](env, exports);
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
