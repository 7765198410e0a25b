#!/usr/bin/env bash
# What sharded serving costs: a front `back` over 3 shard `back`s vs one `back` over the merged index, on the same
# N x 512 clustered vectors (one distributed build: `index --train_only`, 3 parts with `--trained_index_folder
# --partition_ids`, `index_combiner`), same machine, wrk sending ClipClient-shaped embedding queries (num_images 40,
# dedup on) at concurrency 1 and 32. The model is a 512-d stand-in (queries are embeddings: it never runs).
#   bash bench/shard_bench.sh [N=1000000] [DURATION_S=15]   (DEDUPLICATE=0: queries without dedup)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
N="${1:-1000000}"; DURATION="${2:-15}"
WORK="$ROOT/.cache/shard-bench"; PY="$ROOT/.cache/venv/bin/python"
[ -x "$PY" ] || bash scripts/setup.sh
command -v wrk >/dev/null || { if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk; else sudo apt-get install -y -qq wrk; fi; }
cargo build --release -q -p clip-retrieval
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
mkdir -p "$WORK"
[ -f "$WORK/model/textual/model.onnx" ] || "$PY" bench/make_stand_in_model.py "$WORK/model" 512
if [ ! -f "$WORK/merged-$N/metadata.arrow" ]; then
  rm -rf "$WORK/emb" "$WORK"/trained "$WORK"/part-* "$WORK"/merged-*
  "$PY" bench/make_clustered_embeddings.py "$WORK/emb" "$N" 512 $((N / 10))
  "$PY" - "$WORK/emb" <<'PY'
import glob, os, sys, pyarrow as pa, pyarrow.parquet as pq, numpy as np
root = sys.argv[1]; os.makedirs(f"{root}/metadata", exist_ok=True); start = 0
for path in sorted(glob.glob(f"{root}/img_emb/img_emb_*.npy"), key=lambda p: int(p.rsplit("_", 1)[1][:-4])):
    n, part = np.load(path, mmap_mode="r").shape[0], path.rsplit("_", 1)[1][:-4]
    ids = range(start, start + n); start += n
    pq.write_table(pa.table({"url": [f"https://example.com/{i}.jpg" for i in ids],
                             "caption": [f"synthetic item {i}" for i in ids]}), f"{root}/metadata/metadata_{part}.parquet")
PY
  flags=(--max_index_memory_usage 256M --no_progress)
  /usr/bin/time -f "train: %e s, peak %M KB" "$BIN" index --embeddings_folder "$WORK/emb" --index_folder "$WORK/trained" \
    --train_only "${flags[@]}"
  slices=(0-3 4-6 7-9)
  for i in 0 1 2; do
    /usr/bin/time -f "part $i: %e s, peak %M KB" "$BIN" index --embeddings_folder "$WORK/emb" \
      --index_folder "$WORK/part-$i" --trained_index_folder "$WORK/trained" --partition_ids "${slices[$i]}" "${flags[@]}"
  done
  /usr/bin/time -f "merge: %e s, peak %M KB" "$BIN" index_combiner \
    --input_folders "$WORK/part-0,$WORK/part-1,$WORK/part-2" --output_folder "$WORK/merged-$N"
fi
echo "index: $(python3 -c "import json; r = json.load(open('$WORK/merged-$N/image.json')); print(r['index_key'], r['index_param'], r['count'], 'vectors')")"
"$PY" bench/shard_bench.py "$WORK" "$BIN" "$N" "$DURATION"
