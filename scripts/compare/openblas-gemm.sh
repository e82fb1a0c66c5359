#!/usr/bin/env bash
# Builds scripts/compare/openblas-gemm.c against dsv3's native GEMM sources and the system
# OpenBLAS, then runs it: dsv3 vs OpenBLAS fp32 GEMM side by side (see the .c file).
# Development tool only; needs g++/gcc and OpenBLAS (Debian: apt-get install libopenblas-dev).
# Usage: scripts/compare/openblas-gemm.sh [THREADS] [CASES] [ROUNDS]
#   default: 2 threads, the dsv3 bench gemm shapes as nt plus nn/tn 1024^3, 15 rounds.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
threads=${1:-2}
cases=${2:-nt:64x512x512,nt:256x512x2048,nt:1024x1024x1024,nt:2048x256x768,nt:2048x768x256,nn:1024x1024x1024,tn:1024x1024x1024}
rounds=${3:-15}
inc=$(ls -d /usr/include/*/openblas-pthread /usr/include/openblas 2>/dev/null | head -1 || true)
lib=$(ls -d /usr/lib/*/openblas-pthread 2>/dev/null | head -1 || true)
if [ -z "$inc" ] && [ ! -f /usr/include/cblas.h ]; then
  echo "openblas-gemm.sh: OpenBLAS headers not found (install libopenblas-dev)" >&2
  exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
src=$root/native/src
flags="-O3 -std=gnu11 -fno-strict-aliasing -I$src"
objs=()
for isa in AVX512 AVX2 SCALAR; do
  case $isa in
    AVX512) f="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx512vbmi -mfma -mf16c -mavx2 -mbmi2" ;;
    AVX2) f="-mavx2 -mfma -mf16c -mbmi2" ;;
    SCALAR) f="" ;;
  esac
  for s in gemm_driver gemm_kernel gemm_pack gemm_gemv; do
    gcc $flags $f -DDSV3_ISA_$isa=1 -c "$src/isa/$s.c" -o "$out/${s}_$isa.o"
    objs+=("$out/${s}_$isa.o")
  done
done
for s in threadpool cpu memory; do
  gcc $flags -c "$src/$s.c" -o "$out/$s.o"
  objs+=("$out/$s.o")
done
gcc $flags ${inc:+-I$inc} "$root/scripts/compare/openblas-gemm.c" "${objs[@]}" -o "$out/openblas-gemm" \
  ${lib:+-L$lib -Wl,-rpath,$lib} -lopenblas -lpthread -lm
"$out/openblas-gemm" "$threads" "$cases" "$rounds"
