#!/usr/bin/env bash
# Measures this machine's per-operation build costs (faiss k-means, coarse assignment, HNSW, codec encoding, OPQ,
# the exact top-k of tuning, float16 I/O) into bench/index_costs.json, which `clip-retrieval index --plan` reads
# (compiled in as its default), then prints the README's scale table (the add time's parts on stderr).
#   bash bench/index_costs.sh [COUNT=100000] [DIM=512] [CORES=2]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
COUNT="${1:-100000}"; DIM="${2:-512}"; CORES="${3:-2}"
bash scripts/setup.sh
cargo build --release -q -p clip-retrieval
BIN="${BIN:-$CARGO_TARGET_DIR/release/clip-retrieval}"
"$BIN" index --measure_costs bench/index_costs.json --count "$COUNT" --dim "$DIM" --nb_cores "$CORES"
echo "| vectors x dim, budget | structure | resident | disk (index + float16 re-rank) | train | add | tune (at most) | build | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for plan in "10000000 768 4G 10M" "100000000 768 16G 100M" "1000000000 768 64G 1B"; do
  set -- $plan
  "$BIN" index --plan --costs bench/index_costs.json --count "$1" --dim "$2" --max_index_memory_usage "$3" \
    --nb_cores "$CORES" | python3 -c "
import sys
f = dict(l.split(': ', 1) for l in sys.stdin.read().splitlines() if ': ' in l)
gib = lambda k: int(f[k].split()[0]) / 2**30
hours = lambda k: float(f[k].split()[0]) / 3600
print(f\"| $4 x $2, $3 | \`{f['structure']}\` | {gib('resident bytes'):.1f} GiB | {gib('disk bytes'):.0f} GiB | \"
      f\"{hours('train seconds'):.1f} h | {hours('add seconds'):.1f} h | {hours('tune seconds'):.2f} h | \"
      f\"{hours('build seconds'):.1f} h | {gib('peak rss bytes'):.1f} GiB |\")
print('add seconds: ' + f['add seconds'], file=sys.stderr)
"
done
