#!/bin/bash
# Interleaved A/B of V2-Lite batch-1 decode between two builds of the addon (issue 12).
#   scripts/bench-decode-ab.sh BASE.node NEW.node THREADS ROUNDS [bf16|fp8]   (default bf16)
# Prints per run: build, threads, load, tokens_per_s, cpu_ms_per_token, ms_per_token_median.
set -euo pipefail
cd "$(dirname "$0")/.."
for r in $(seq 1 "$4"); do for v in "$1" "$2"; do
  echo -n "$v ${5:-bf16} thr$3 $(uptime | sed 's/.*load/load/') "
  DSV3_ADDON="$v" DSV3_THREADS="$3" node dist/src/cli/main.js bench decode --checkpoint-dtype "${5:-bf16}" \
    --config configs/deepseek-v2-lite-bench.json --cache-dir /tmp/mmap-bench --prompt 1 --tokens 16 --reps 3 \
    --threads "$3" --json | node -e 'const j=JSON.parse(require("fs").readFileSync(0));console.log(j.tokens_per_s,j.cpu_ms_per_token,j.ms_per_token_median)'
done; done
