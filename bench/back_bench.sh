#!/usr/bin/env bash
# Side-by-side load test of the knn service: our `clip-retrieval back` vs Python clip-retrieval's back (Flask), the
# same index (N x 512 clustered embeddings, built once by our `index` under a 128M budget: IVF + compressed codes),
# the same ViT-B/32-shaped model with random weights (ours at fp32 and int8), wrk (apt) as the load generator.
#   bash bench/back_bench.sh [N=200000] [DURATION_S=20]
# Installs wrk and .cache/bench-venv (clip-retrieval with torch and open_clip; several GB, once).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
N="${1:-200000}"; DURATION="${2:-20}"
WORK="$ROOT/.cache/back-bench"; VENV="$ROOT/.cache/bench-venv"; PY="$ROOT/.cache/venv/bin/python"
bash scripts/setup.sh
command -v wrk >/dev/null || { if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk; else sudo apt-get install -y -qq wrk; fi; }
if ! "$VENV/bin/python" -c "import clip_retrieval, onnx, onnxscript, onnxruntime, pkg_resources" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q clip-retrieval onnx onnxscript onnxruntime==1.32.0 "setuptools<70"
fi
cargo build --release -q -p clip-retrieval
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
mkdir -p "$WORK"
# The inference bench's export when it has one (the same seed-0 weights), else a new one; then its int8 towers.
[ -f "$WORK/vit-b-32/textual/model.onnx" ] || { [ -f "$ROOT/.cache/bench/vit-b-32/textual/model.int8.onnx" ] &&
  cp -r "$ROOT/.cache/bench/vit-b-32" "$WORK/vit-b-32"; } || "$VENV/bin/python" models/scripts/export_openclip.py \
  --model ViT-B-32 --out "$WORK/vit-b-32" --tokenizer models/tiny-clip/textual/tokenizer.json
[ -f "$WORK/vit-b-32/textual/model.int8.onnx" ] || "$VENV/bin/python" models/scripts/quantize.py "$WORK/vit-b-32"
if [ ! -f "$WORK/index-$N/image.index" ]; then
  rm -rf "$WORK/emb" "$WORK/index-$N"
  "$PY" bench/make_clustered_embeddings.py "$WORK/emb" "$N" 512
  "$PY" - "$WORK/emb" <<'PY'
import glob, os, sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
root = sys.argv[1]; os.makedirs(f"{root}/metadata", exist_ok=True); start = 0
for path in sorted(glob.glob(f"{root}/img_emb/img_emb_*.npy"), key=lambda p: int(p.rsplit("_", 1)[1][:-4])):
    n, part = np.load(path, mmap_mode="r").shape[0], path.rsplit("_", 1)[1][:-4]
    ids = range(start, start + n); start += n
    pq.write_table(pa.table({"url": [f"https://example.com/{i}.jpg" for i in ids],
                             "caption": [f"synthetic item {i}" for i in ids]}), f"{root}/metadata/metadata_{part}.parquet")
PY
  "$BIN" index --embeddings_folder "$WORK/emb" --index_folder "$WORK/index-$N" --max_index_memory_usage 128M --no_progress
  # Python's back reads metadata/*.parquet and takes search parameters from the index file: give it both.
  cp -r "$WORK/emb/metadata" "$WORK/index-$N/metadata"
  "$VENV/bin/python" - "$WORK/index-$N" <<'PY'
import json, sys, faiss
folder = sys.argv[1]; index = faiss.read_index(f"{folder}/image.index")
faiss.ParameterSpace().set_index_parameters(index, json.load(open(f"{folder}/image.json"))["index_param"])
faiss.write_index(index, f"{folder}/image.index")
PY
fi
mkdir -p "$WORK/images"
[ -n "$(ls "$WORK/images" 2>/dev/null)" ] || { "$BIN" sample-dataset --output_folder "$WORK/sample" --count 8 --seed 5 && cp "$WORK"/sample/*.jpg "$WORK/images/"; }
echo "{\"bench\": {\"indice_folder\": \"$WORK/index-$N\", \"columns_to_return\": [\"url\", \"caption\"]}}" > "$WORK/indices_ours.json"
echo "{\"bench\": {\"indice_folder\": \"$WORK/index-$N\", \"columns_to_return\": [\"url\", \"caption\"], \"precision\": \"int8\"}}" \
  > "$WORK/indices_ours_int8.json"
echo "{\"bench\": \"$WORK/index-$N\"}" > "$WORK/indices_python.json"
echo "index: $(python3 -c "import json; r = json.load(open('$WORK/index-$N/image.json')); print(r['index_key'], r['index_param'], r['count'], 'vectors')")"
"$PY" bench/back_bench.py "$WORK" "$BIN" "$VENV/bin/python" "$DURATION"
