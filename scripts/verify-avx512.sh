#!/usr/bin/env bash
# Runs the native kernel tests against the AVX-512 copies of the kernels on a CPU WITHOUT
# AVX-512: builds a separate addon whose AVX-512 library is compiled with SIMDe's portable
# implementations of the AVX-512 intrinsics (scripts/verify-avx512/immintrin.h) and whose CPU
# detection reports AVX-512 + bf16 + vbmi (-DDSV3_EMULATE_AVX512), then runs the given test
# files (default: the native-vs-reference kernel and op tests) with DSV3_ADDON pointing at it.
# Slow (emulation) but exact in what it checks: the AVX-512 source paths, including the
# VDPBF16PS bf16 GEMM, against the pure-TypeScript reference.
# Development tool: needs gcc and SIMDe headers (Debian: apt-get install libsimde-dev).
# Usage: scripts/verify-avx512.sh [test-name-filter ...]   (after npm run build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ ! -f /usr/include/simde/x86/avx512.h ]; then
  echo "verify-avx512.sh: SIMDe headers not found (install libsimde-dev)" >&2
  exit 1
fi
nodeinc=$(dirname "$(command -v node)")/../include/node
[ -f "$nodeinc/node_api.h" ] || nodeinc=/usr/include/node
out=${DSV3_VERIFY_DIR:-$root/build/verify-avx512}
mkdir -p "$out/obj"
common="-O2 -std=gnu11 -fPIC -fno-strict-aliasing -Wno-unused-function -Wno-unused-variable -Wno-psabi -I$root/native/src"
objs=()
n=0
for f in native/src/isa/*.c; do
  b=$(basename "$f" .c)
  # AVX-512 copy: SIMDe emulation on top of the host's AVX2 (no -mavx512* flags)
  gcc $common -I"$root/scripts/verify-avx512" -mavx2 -mfma -mf16c -mbmi2 -DDSV3_ISA_AVX512=1 -c "$f" -o "$out/obj/${b}_avx512.o" &
  gcc $common -mavx2 -mfma -mf16c -mbmi2 -DDSV3_ISA_AVX2=1 -c "$f" -o "$out/obj/${b}_avx2.o" &
  gcc $common -DDSV3_ISA_SCALAR=1 -c "$f" -o "$out/obj/${b}_scalar.o" &
  objs+=("$out/obj/${b}_avx512.o" "$out/obj/${b}_avx2.o" "$out/obj/${b}_scalar.o")
  n=$((n + 1))
  if (( n % 2 == 0 )); then wait; fi
done
for f in native/src/*.c; do
  b=$(basename "$f" .c)
  gcc $common -DNAPI_VERSION=8 -DDSV3_EMULATE_AVX512 -I"$nodeinc" -c "$f" -o "$out/obj/core_$b.o" &
  objs+=("$out/obj/core_$b.o")
done
wait
gcc -shared -o "$out/dsv3.node" "${objs[@]}" -lpthread -lm -ldl
echo "verify-avx512: built $out/dsv3.node"
node -e "const a=require('$out/dsv3.node'); const i=a.info(); if (i.isa!=='avx512'||!i.avx512bf16) { console.error('verify-avx512: the addon does not report avx512+bf16', i); process.exit(1) } console.log('verify-avx512: addon reports', JSON.stringify(i))"
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(kernels-native kernels-fp8-quant kernels-fp8-requant kernels-fp8-gemm ops-native gemm kernels-fp8-weight optim-kernels native-complete kernels-bf16 kernels-attention-bf16)
files=()
for f in dist/test/*.test.js; do
  for s in "${filters[@]}"; do
    if [[ "$f" == *"$s"* ]]; then files+=("$f"); break; fi
  done
done
[ ${#files[@]} -gt 0 ] || { echo "verify-avx512: no compiled tests match (run npm run build first)" >&2; exit 1; }
DSV3_ADDON="$out/dsv3.node" DSV3_REQUIRE_NATIVE=1 node --test --test-concurrency=2 "${files[@]}"
