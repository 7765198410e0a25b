#!/usr/bin/env bash
# Side-by-side: our `clip-retrieval inference` (fp32 and int8) vs Python `pip install clip-retrieval` inference, on
# CPU, the same ViT-B/32-shaped random weights, the same images (96-256 px, then the same samples at 768 px), in one
# run. Ends with one RESULT line per configuration: samples/s of each, the ratio, the cosines, peak RSS.
#   bash bench/inference_bench.sh [COUNT=2000] [BATCH=64] [WORKERS=2]
# Installs into .cache/bench-venv (clip-retrieval, torch, open_clip, onnx: several GB, once).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
COUNT="${1:-2000}"; BATCH="${2:-64}"; WORKERS="${3:-2}"
WORK="$ROOT/.cache/bench"; VENV="$ROOT/.cache/bench-venv"
bash scripts/setup.sh
# clip-retrieval's `import clip` needs pkg_resources, which setuptools 70 removed: without the pin the Python side
# writes nothing. The check imports it too, so a venv made before the pin is repaired.
if ! "$VENV/bin/python" -c "import clip_retrieval, onnx, onnxscript, onnxruntime, pkg_resources" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q clip-retrieval onnx onnxscript onnxruntime==1.32.0 "setuptools<70"
fi
cargo build --release -q -p clip-retrieval
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
mkdir -p "$WORK"
MODEL="$WORK/vit-b-32"
[ -f "$MODEL/textual/model.onnx" ] || "$VENV/bin/python" models/scripts/export_openclip.py --model ViT-B-32 --out "$MODEL" \
  --tokenizer models/tiny-clip/textual/tokenizer.json
# The int8 towers (and the fused fp32 graph ours then loads for fp32) of the same weights.
[ -f "$MODEL/textual/model.int8.onnx" ] || "$VENV/bin/python" models/scripts/quantize.py "$MODEL"
PY="$ROOT/.cache/venv/bin/python"

# Runs ours on $1 (shard pattern) into $2 with the extra flags after; timing and peak RSS into $2.json.
ours() {
  local shards="$1" out="$2"; shift 2
  rm -rf "$out"
  "$PY" bench/measure.py "$out.json" -- "$BIN" inference --input_dataset "$shards" --input_format webdataset \
    --output_folder "$out" --clip_model "$MODEL" --batch_size "$BATCH" --num_prepro_workers "$WORKERS" --no_progress "$@"
}

# One RESULT line: precision, image size label, our run, Python's run, the cosine summary of ours against the reference.
result() {
  "$PY" - "$COUNT" "$@" <<'PY'
import json, sys
n, precision, images, ours, python, cos = int(sys.argv[1]), *sys.argv[2:7]
r, p, c = (json.load(open(f)) for f in (ours, python, cos))
rs, ps = n / r["seconds"], n / p["seconds"]
print(f"RESULT precision={precision} images={images} ours={rs:.1f}/s python={ps:.1f}/s ratio={rs / ps:.2f}x "
      f"image_cos_mean={c['image_cos_mean']:.4f} image_cos_p01={c['image_cos_p01']:.4f} "
      f"text_cos_mean={c['text_cos_mean']:.4f} ours_rss={r['peak_rss_mb']:.0f}MB python_rss={p['peak_rss_mb']:.0f}MB")
PY
}

RESULTS=()
for SIZE in 256 768; do
  # 256: the renderer's own 96-256 px images; 768: the same samples drawn with a 768 px longer side (web-sized).
  DATA="$WORK/data-$COUNT-$SIZE"; SIZE_FLAG=(); [ "$SIZE" = 256 ] || SIZE_FLAG=(--image_size "$SIZE")
  # Tar shards of 500 samples (webdataset): the input format both implementations read correctly (see the python runner).
  [ -d "$DATA" ] || "$BIN" sample-dataset --output_folder "$DATA" --count "$COUNT" --seed 3 \
    --output_format webdataset --shard_size 500 "${SIZE_FLAG[@]}"
  LAST=$(printf '%05d' $(( (COUNT + 499) / 500 - 1 )))
  SHARDS="$DATA/{00000..$LAST}.tar"
  R="$WORK/$SIZE"; mkdir -p "$R"
  echo "== ${SIZE}px: ours fp32"
  ours "$SHARDS" "$R/fp32"
  echo "== ${SIZE}px: ours int8"
  ours "$SHARDS" "$R/int8" --precision int8
  if [ "$SIZE" = 256 ]; then
    echo "== ${SIZE}px: ours fp32 with ONNX Runtime's spinning threads (its default)"
    ours "$SHARDS" "$R/fp32-spinning" --intra_op_spinning true
  fi
  echo "== ${SIZE}px: python clip-retrieval"
  rm -rf "$R/python"
  "$PY" bench/measure.py "$R/python.json" -- "$VENV/bin/python" bench/py_clip_retrieval_inference.py "$SHARDS" "$R/python" "$BATCH" "$WORKERS"
  # fp32 against the PyTorch reference (parity); int8 against our fp32 (what int8 changes).
  "$PY" bench/compare_outputs.py "$R/fp32" "$R/python" "$R/cos-fp32.json"
  "$PY" bench/compare_outputs.py "$R/int8" "$R/fp32" "$R/cos-int8.json"
  RESULTS+=("$(result fp32 "${SIZE}px" "$R/fp32.json" "$R/python.json" "$R/cos-fp32.json")")
  RESULTS+=("$(result int8 "${SIZE}px" "$R/int8.json" "$R/python.json" "$R/cos-int8.json")")
  if [ "$SIZE" = 256 ]; then
    "$PY" bench/compare_outputs.py "$R/fp32-spinning" "$R/python" "$R/cos-spin.json"
    RESULTS+=("$(result fp32-spinning "${SIZE}px" "$R/fp32-spinning.json" "$R/python.json" "$R/cos-spin.json")")
  fi
done
# Decode + resize alone per image (no model), from the stats of the int8 runs: read_duration is the preprocessing
# thread's time, spread over the workers.
"$PY" - "$WORK" <<'PY'
import glob, json, sys
for size in ("256", "768"):
    stats = [json.load(open(f)) for f in glob.glob(f"{sys.argv[1]}/{size}/int8/stats/*.json")]
    n = sum(s["sample_count"] for s in stats)
    read, infer = sum(s["read_duration"] for s in stats), sum(s["inference_duration"] for s in stats)
    print(f"{size}px: reading + preprocessing {1000 * read / n:.2f} ms/sample, encoders {1000 * infer / n:.2f} ms/sample (int8)")
PY
printf '%s\n' "${RESULTS[@]}"
