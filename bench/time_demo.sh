#!/usr/bin/env bash
# Times `bash scripts/demo.sh` as a new user meets it: a fresh clone of this checkout's HEAD with empty caches (its
# own Cargo home, so crates are downloaded again; its own target dir, project cache, npm cache; pip without cache),
# up to the first answered text query on the knn service. Debian packages already installed are not removed.
# Prints the seconds and the demo's own step lines, then stops the demo.
#   bash bench/time_demo.sh [WORK=/tmp/clip-retrieval-demo-timing]
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-/tmp/clip-retrieval-demo-timing}"
PORT=1299
rm -rf "$WORK" && mkdir -p "$WORK"
git clone -q "$SRC" "$WORK/clone"
cd "$WORK/clone"
export CARGO_TARGET_DIR="$WORK/target" CLIP_RETRIEVAL_CACHE="$WORK/cache" CARGO_HOME="$WORK/cargo" \
  npm_config_cache="$WORK/npm" PIP_NO_CACHE_DIR=1 PATH="$HOME/.cargo/bin:$PATH" PORT
start=$(date +%s)
setsid bash scripts/demo.sh > "$WORK/demo.log" 2>&1 &
pid=$!
trap 'kill -- -$pid 2>/dev/null || true' EXIT
query='{"text": "a red circle", "num_images": 3, "indice_name": "end2end"}'
until curl -sf "localhost:$PORT/knn-service" -d "$query" > "$WORK/answer.json" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { echo "the demo exited before answering: $WORK/demo.log"; exit 1; }
  sleep 2
done
echo "RESULT demo_first_query_seconds=$(( $(date +%s) - start ))"
grep '^\[demo' "$WORK/demo.log"
