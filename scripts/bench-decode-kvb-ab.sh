#!/bin/bash
# Interleaved A/B of V2-Lite batch-1 decode with a bf16 kv_b_proj read as bits (DSV3_KVB_BF16=1, the
# default) against its float32 copy (DSV3_KVB_BF16=0), same build (issue 12).
#   scripts/bench-decode-kvb-ab.sh THREADS ROUNDS [bf16] [CACHE_DIR]
# Prints per run: kvb_bf16, threads, load, tokens_per_s, cpu_ms_per_token, ms_per_token_median,
# weight_mb_per_token, decoded_kv_b_mb.
set -euo pipefail
cd "$(dirname "$0")/.."
for r in $(seq 1 "$2"); do for v in 0 1; do
  echo -n "kvb_bf16=$v ${3:-bf16} thr$1 $(uptime | sed 's/.*load/load/') "
  DSV3_KVB_BF16="$v" DSV3_THREADS="$1" node dist/src/cli/main.js bench decode --checkpoint-dtype "${3:-bf16}" \
    --config configs/deepseek-v2-lite-bench.json --cache-dir "${4:-/tmp/mmap-bench}" --prompt 1 --tokens 16 --reps 3 \
    --threads "$1" --json | node -e 'const j=JSON.parse(require("fs").readFileSync(0));console.log(j.tokens_per_s,j.cpu_ms_per_token,j.ms_per_token_median,j.weight_mb_per_token,j.decoded_kv_b_mb)'
done; done
