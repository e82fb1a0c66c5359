/* Small helpers for the Node-API bindings: argument unpacking with clear JS errors.
 * Each binding checks sizes before a kernel touches memory, so a wrong call from JS is a
 * TypeError/RangeError naming the argument, never an out-of-bounds access. */
#ifndef DSV3_NAPI_UTIL_H
#define DSV3_NAPI_UTIL_H
#define NAPI_VERSION 8
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NAPI_MAX_ARGS 24

#define NAPI_CALL(env, call)                                      \
  do {                                                            \
    if ((call) != napi_ok) {                                      \
      napi_throw_error((env), NULL, "dsv3 native: " #call " failed"); \
      return NULL;                                                \
    }                                                             \
  } while (0)

/* Fetch argc arguments; throws if fewer were given. */
#define GET_ARGS(env, info, n)                                                  \
  size_t argc_ = NAPI_MAX_ARGS;                                                 \
  napi_value argv[NAPI_MAX_ARGS];                                               \
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc_, argv, NULL, NULL));        \
  if (argc_ < (size_t)(n)) {                                                    \
    char msg_[128];                                                             \
    snprintf(msg_, sizeof msg_, "dsv3 native: expected %d arguments, got %zu", (int)(n), argc_); \
    napi_throw_type_error(env, NULL, msg_);                                     \
    return NULL;                                                                \
  }

/* Returns a pointer to the typed array's first element and its element count, or NULL
 * (with a pending TypeError) if `v` is not a typed array of the expected type. */
static inline void* dsv3_typed(napi_env env, napi_value v, napi_typedarray_type want, size_t* len, const char* name) {
  bool is = false;
  napi_is_typedarray(env, v, &is);
  if (!is) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a typed array", name);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  napi_typedarray_type type;
  size_t length;
  void* data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &off) != napi_ok) return NULL;
  if (type != want) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' has the wrong typed-array type (%d, expected %d)", name, (int)type, (int)want);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  if (len) *len = length;
  /* An empty (or detached) typed array may report a NULL data pointer; callers treat NULL as
   * "exception pending", so hand back a valid dummy address instead (nothing is read). */
  if (!data) {
    static uint64_t empty_dummy;
    return &empty_dummy;
  }
  return data;
}

static inline float* dsv3_f32(napi_env env, napi_value v, size_t* len, const char* name) {
  return (float*)dsv3_typed(env, v, napi_float32_array, len, name);
}
static inline int32_t* dsv3_i32(napi_env env, napi_value v, size_t* len, const char* name) {
  return (int32_t*)dsv3_typed(env, v, napi_int32_array, len, name);
}
static inline uint16_t* dsv3_u16(napi_env env, napi_value v, size_t* len, const char* name) {
  return (uint16_t*)dsv3_typed(env, v, napi_uint16_array, len, name);
}
static inline uint8_t* dsv3_u8(napi_env env, napi_value v, size_t* len, const char* name) {
  return (uint8_t*)dsv3_typed(env, v, napi_uint8_array, len, name);
}

/* Integer / double arguments (JS numbers). Return 0 on success, -1 with a pending error. */
static inline int dsv3_int(napi_env env, napi_value v, int64_t* out, const char* name) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a number", name);
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  return 0;
}
static inline int dsv3_double(napi_env env, napi_value v, double* out, const char* name) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' must be a number", name);
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  return 0;
}

/* Throws a RangeError naming the argument when `need` elements exceed `have`. */
static inline int dsv3_need(napi_env env, size_t have, size_t need, const char* name) {
  if (need > have) {
    char msg[192];
    snprintf(msg, sizeof msg, "dsv3 native: argument '%s' has %zu elements, the call needs %zu", name, have, need);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  return 0;
}

static inline void dsv3_export(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}
#endif
