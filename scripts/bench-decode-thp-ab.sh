#!/bin/bash
# Huge-page mappings of a checkpoint (issue 12): interleaved A/B of V2-Lite batch-1 decode between
# two addon builds, over the two page-cache states each build leaves behind when it reads the
# checkpoint cold (--cold drops the checkpoint's pages first; use a --cache-dir of your own, not
# one other people's runs are reading). Per round and per build C ("cold by"): one --cold run of
# C, then warm runs of BASE and NEW on the page cache C left.
#   scripts/bench-decode-thp-ab.sh BASE.node NEW.node THREADS ROUNDS bf16|fp8 CACHE_DIR [TOKENS=16]
# (.node paths absolute). Prints per run: cold_by, build, cold|warm, load, tokens_per_s,
# cpu_ms_per_token, ms_per_token_median, roofline_fraction, bandwidth_gb_per_s, file_pmd_mapped_mb
# (MiB of the weights mapped with 2 MiB entries), rss_after_decode_mb, ttft_ms.
set -euo pipefail
cd "$(dirname "$0")/.."
one() { # ADDON cold_flag label
  echo -n "$3 $(uptime | sed 's/.*load average: //; s/,.*//') "
  DSV3_ADDON="$1" DSV3_THREADS="$THR" node dist/src/cli/main.js bench decode --checkpoint-dtype "$DT" \
    --config configs/deepseek-v2-lite-bench.json --cache-dir "$DIR" --prompt 1 --tokens "$TOK" --reps 3 \
    --threads "$THR" --json $2 | node -e 'const j=JSON.parse(require("fs").readFileSync(0));console.log(j.tokens_per_s,j.cpu_ms_per_token,j.ms_per_token_median,j.roofline_fraction,j.bandwidth_gb_per_s,j.file_pmd_mapped_mb,j.rss_after_decode_mb,j.ttft_ms)'
}
BASE=$1 NEW=$2 THR=$3 ROUNDS=$4 DT=$5 DIR=$6 TOK=${7:-16}
echo "cold_by build run load1 tok_s cpu_ms_tok ms_tok_median roofline bw_gb_s pmd_mib rss_mib ttft_ms ($DT, $THR threads)"
for r in $(seq 1 "$ROUNDS"); do for c in base new; do
  cv=$BASE; [ $c = new ] && cv=$NEW
  one "$cv" --cold "$c $c cold"
  one "$BASE" "" "$c base warm"
  one "$NEW" "" "$c new warm"
  one "$BASE" "" "$c base warm"
  one "$NEW" "" "$c new warm"
done; done
