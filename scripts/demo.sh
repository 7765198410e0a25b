#!/usr/bin/env bash
# The demo on a fresh machine: install only what it needs (scripts/setup.sh --demo), build, then `clip-retrieval
# end2end`: render the synthetic captioned dataset, embed and index it with the shipped model, and serve the knn API
# and the web UI until Ctrl-C. Each step is announced with the seconds elapsed. Outputs land in ./demo (DEMO_DIR);
# PORT (1234), COUNT (1000), RUN_BACK=false to stop after the index.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DEMO_DIR="${DEMO_DIR:-$ROOT/demo}"
COUNT="${COUNT:-1000}"
START=$SECONDS
step() { printf '\n[demo %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
# Only what the demo uses: the test command (scripts/test.sh) installs the rest (S3 server, Chromium, control plane).
step "1/4 installing prerequisites (Debian build packages, ONNX Runtime, the UI's npm packages)"
bash scripts/setup.sh --demo
step "2/4 building clip-retrieval (release; faiss 1.12 from source the first time: most of the wait)"
cargo build --release -p clip-retrieval
step "3/4 building the web UI (front/dist)"
(cd front && npm run build --silent)
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
rm -rf "$DEMO_DIR"
step "4/4 end2end: rendering $COUNT captioned images, embedding and indexing them with models/tiny-clip, then serving \
http://127.0.0.1:${PORT:-1234}/ (Ctrl-C stops)"
exec "$BIN" end2end --output_folder "$DEMO_DIR" --sample_count "$COUNT" --clip_model "$ROOT/models/tiny-clip" \
  --port "${PORT:-1234}" --run_back "${RUN_BACK:-true}"
