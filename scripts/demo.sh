#!/usr/bin/env bash
# The demo on a fresh machine: install what is needed, build, then `clip-retrieval end2end`: render the synthetic
# captioned dataset, embed and index it with the shipped model, and serve the knn API (and the web UI when front/dist
# is built) until Ctrl-C. Outputs land in ./demo (DEMO_DIR); PORT (1234), COUNT (1000), RUN_BACK=false to stop after
# the index.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DEMO_DIR="${DEMO_DIR:-$ROOT/demo}"
COUNT="${COUNT:-1000}"
bash scripts/setup.sh
cargo build --release -p clip-retrieval
(cd front && npm run build --silent)
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
rm -rf "$DEMO_DIR"
exec "$BIN" end2end --output_folder "$DEMO_DIR" --sample_count "$COUNT" --clip_model "$ROOT/models/tiny-clip" \
  --port "${PORT:-1234}" --run_back "${RUN_BACK:-true}"
