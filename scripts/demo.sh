#!/usr/bin/env bash
# The demo on a fresh machine: install what is needed, build, render a synthetic captioned dataset with the shipped
# generator, and embed it with the shipped model. Outputs land in ./demo (override with DEMO_DIR).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DEMO_DIR="${DEMO_DIR:-$ROOT/demo}"
COUNT="${COUNT:-1000}"
bash scripts/setup.sh
cargo build --release -p clip-retrieval
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
rm -rf "$DEMO_DIR"
"$BIN" sample-dataset --output_folder "$DEMO_DIR/dataset" --count "$COUNT" --seed 7
"$BIN" inference --input_dataset "$DEMO_DIR/dataset" --output_folder "$DEMO_DIR/embeddings" \
  --clip_model "$ROOT/models/tiny-clip" --enable_metadata True
echo
echo "Dataset:    $DEMO_DIR/dataset (jpg + txt caption + json attributes per sample)"
echo "Embeddings: $DEMO_DIR/embeddings/img_emb/img_emb_0.npy, text_emb/text_emb_0.npy"
echo "Metadata:   $DEMO_DIR/embeddings/metadata/metadata_0.parquet; stats in stats/0.json"
"$ROOT/.cache/venv/bin/python" - "$DEMO_DIR/embeddings" <<'PY'
import sys, numpy as np, pyarrow.parquet as pq
root = sys.argv[1]
img = np.load(f"{root}/img_emb/img_emb_0.npy").astype(np.float32)
txt = np.load(f"{root}/text_emb/text_emb_0.npy").astype(np.float32)
meta = pq.read_table(f"{root}/metadata/metadata_0.parquet").to_pylist()
print(f"numpy reads {img.shape} image and {txt.shape} text embeddings ({np.load(f'{root}/img_emb/img_emb_0.npy').dtype})")
hits = sum(int(np.argsort(-(img @ t))[:10].__contains__(i)) for i, t in enumerate(txt))
print(f"caption -> own image in the top 10 for {hits}/{len(txt)} samples")
best = int(np.argmax(img @ txt[0]))
print(f"query {meta[0]['caption']!r} -> best image {meta[best]['image_path']} ({meta[best]['caption']!r})")
PY
