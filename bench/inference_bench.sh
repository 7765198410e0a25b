#!/usr/bin/env bash
# Side-by-side: our `clip-retrieval inference` vs Python `pip install clip-retrieval` inference, on CPU, the same
# ViT-B/32-shaped random weights, the same images, in one run. Prints samples/s, the ratio, and peak RSS of each.
#   bash bench/inference_bench.sh [COUNT=2000] [BATCH=64] [WORKERS=2]
# Installs into .cache/bench-venv (clip-retrieval, torch, open_clip, onnx: several GB, once).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
COUNT="${1:-2000}"; BATCH="${2:-64}"; WORKERS="${3:-2}"
WORK="$ROOT/.cache/bench"; VENV="$ROOT/.cache/bench-venv"
bash scripts/setup.sh
if ! "$VENV/bin/python" -c "import clip_retrieval, onnx, onnxscript, onnxruntime" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q clip-retrieval onnx onnxscript onnxruntime==1.32.0
fi
cargo build --release -q -p clip-retrieval
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
mkdir -p "$WORK"
[ -f "$WORK/vit-b-32/textual/model.onnx" ] || "$VENV/bin/python" models/scripts/export_openclip.py --model ViT-B-32 --out "$WORK/vit-b-32" \
  --tokenizer models/tiny-clip/textual/tokenizer.json
# Tar shards of 500 samples (webdataset): the input format both implementations read correctly (see the python runner).
[ -d "$WORK/data-$COUNT" ] || "$BIN" sample-dataset --output_folder "$WORK/data-$COUNT" --count "$COUNT" --seed 3 \
  --output_format webdataset --shard_size 500
LAST=$(printf '%05d' $(( (COUNT + 499) / 500 - 1 )))
SHARDS="$WORK/data-$COUNT/{00000..$LAST}.tar"
rm -rf "$WORK/out-rust" "$WORK/out-python"
PY="$ROOT/.cache/venv/bin/python"
echo "== ours"
"$PY" bench/measure.py "$WORK/rust.json" -- "$BIN" inference --input_dataset "$SHARDS" --input_format webdataset --output_folder "$WORK/out-rust" \
  --clip_model "$WORK/vit-b-32" --batch_size "$BATCH" --num_prepro_workers "$WORKERS" --no_progress
echo "== python clip-retrieval"
"$PY" bench/measure.py "$WORK/python.json" -- "$VENV/bin/python" bench/py_clip_retrieval_inference.py "$SHARDS" "$WORK/out-python" "$BATCH" "$WORKERS"
"$PY" bench/compare_outputs.py "$WORK/out-rust" "$WORK/out-python"
"$PY" - "$WORK" "$COUNT" <<'PY'
import json, sys
w, n = sys.argv[1], int(sys.argv[2])
r, p = json.load(open(f"{w}/rust.json")), json.load(open(f"{w}/python.json"))
rs, ps = n / r["seconds"], n / p["seconds"]
print(f"ours:   {rs:6.2f} samples/s ({r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB)")
print(f"python: {ps:6.2f} samples/s ({p['seconds']:.1f} s, peak RSS {p['peak_rss_mb']:.0f} MB)")
print(f"speed ratio ours/python: {rs / ps:.2f}x; memory ratio: {r['peak_rss_mb'] / p['peak_rss_mb']:.2f}x")
PY
