#!/bin/bash
# Interleaved A/B of V2-Lite batch-1 decode with an FP8 kv_b_proj read in place (DSV3_KVB_FP8=1, the
# default) against its float32 copy (DSV3_KVB_FP8=0), same build (issue 12).
#   scripts/bench-decode-kvb-fp8-ab.sh THREADS ROUNDS [fp8] [CACHE_DIR]
# Prints per run: kvb_fp8, threads, load, tokens_per_s, cpu_ms_per_token, ms_per_token_median,
# weight_mb_per_token, decoded_kv_b_mb.
set -euo pipefail
cd "$(dirname "$0")/.."
for r in $(seq 1 "$2"); do for v in 0 1; do
  echo -n "kvb_fp8=$v ${3:-fp8} thr$1 $(uptime | sed 's/.*load/load/') "
  DSV3_KVB_FP8="$v" DSV3_THREADS="$1" node dist/src/cli/main.js bench decode --checkpoint-dtype "${3:-fp8}" \
    --config configs/deepseek-v2-lite-bench.json --cache-dir "${4:-/tmp/mmap-bench}" --prompt 1 --tokens 16 --reps 3 \
    --threads "$1" --json | node -e 'const j=JSON.parse(require("fs").readFileSync(0));console.log(j.tokens_per_s,j.cpu_ms_per_token,j.ms_per_token_median,j.weight_mb_per_token,j.decoded_kv_b_mb)'
done; done
