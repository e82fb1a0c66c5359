{
  "target_defaults": {
    "cflags": ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-fPIC", "-Wall", "-Wno-unused-function", "-Wno-unused-variable"],
    "cflags!": ["-O2"],
    "include_dirs": ["native/src"]
  },
  "targets": [
    {
      "target_name": "dsv3_isa_avx512",
      "type": "static_library",
      "defines": ["DSV3_ISA_AVX512=1"],
      "cflags": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mavx512vbmi", "-mfma", "-mf16c", "-mavx2", "-mbmi2"],
      "sources": ["<!@(node scripts/list-isa-sources.mjs)"]
    },
    {
      "target_name": "dsv3_isa_avx2",
      "type": "static_library",
      "defines": ["DSV3_ISA_AVX2=1"],
      "cflags": ["-mavx2", "-mfma", "-mf16c", "-mbmi2"],
      "sources": ["<!@(node scripts/list-isa-sources.mjs)"]
    },
    {
      "target_name": "dsv3_isa_scalar",
      "type": "static_library",
      "defines": ["DSV3_ISA_SCALAR=1"],
      "sources": ["<!@(node scripts/list-isa-sources.mjs)"]
    },
    {
      "target_name": "dsv3",
      "dependencies": ["dsv3_isa_avx512", "dsv3_isa_avx2", "dsv3_isa_scalar"],
      "defines": ["NAPI_VERSION=8"],
      "sources": ["<!@(node scripts/list-core-sources.mjs)"],
      "libraries": ["-lpthread", "-lm", "-ldl"]
    }
  ]
}
