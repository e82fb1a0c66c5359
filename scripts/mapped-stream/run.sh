#!/usr/bin/env bash
# Streaming-read rate, per CPU-second of one thread, of a checkpoint's page-cache mapping vs
# anonymous memory on 4 KiB and on huge pages (issue 12; see mapped-stream.c).
# Usage: scripts/mapped-stream/run.sh FILE [MiB=1024] [reps=5]   (needs gcc)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/dsv3-mapped-stream
flags="-mavx2"
grep -qw avx512f /proc/cpuinfo && flags="-mavx512f"
gcc -O2 $flags -o "$out" "$here/mapped-stream.c"
"$out" "$@"
