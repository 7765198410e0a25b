#!/usr/bin/env bash
# Side-by-side: our `clip-retrieval index` vs autofaiss `build_index` (pip), on the same N x D clustered f16
# embeddings, the same memory budget and core count, in one run. Both indices are then evaluated by the same script
# (bench/eval_index.py, Python faiss): recall@10 vs exact search on 1000 held-out queries, QPS at batch 1 and 64.
# Build time and peak RSS (whole process tree) come from bench/measure.py.
#   bash bench/index_bench.sh [N=1000000] [D=512] [BUDGET=256M] [CORES=2]
# Installs into .cache/index-bench-venv (autofaiss, faiss-cpu: a few hundred MB, once).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
N="${1:-1000000}"; D="${2:-512}"; BUDGET="${3:-256M}"; CORES="${4:-2}"
WORK="$ROOT/.cache/index-bench"; VENV="$ROOT/.cache/index-bench-venv"
bash scripts/setup.sh
if ! "$VENV/bin/python" -c "import autofaiss, faiss" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q autofaiss "faiss-cpu==1.12.0" "setuptools<70"
fi
cargo build --release -q -p clip-retrieval
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
EMB="$WORK/emb-$N-$D"
[ -f "$EMB/queries.npy" ] || "$VENV/bin/python" bench/make_clustered_embeddings.py "$EMB" "$N" "$D"
PY="$VENV/bin/python"
rm -rf "$WORK/ours" "$WORK/autofaiss"; mkdir -p "$WORK/autofaiss"

echo "== ours: clip-retrieval index (budget $BUDGET, $CORES cores)"
"$PY" bench/measure.py "$WORK/ours-build.json" -- "$BIN" index --embeddings_folder "$EMB" --index_folder "$WORK/ours" \
  --max_index_memory_usage "$BUDGET" --current_memory_available 16G --nb_cores "$CORES" --no_progress
OURS_PARAM=$("$PY" -c "import json; print(json.load(open('$WORK/ours/image.json'))['index_param'])")

echo "== autofaiss build_index (budget $BUDGET, $CORES cores)"
"$PY" bench/measure.py "$WORK/autofaiss-build.json" -- "$PY" -c "
from autofaiss import build_index
build_index(embeddings='$EMB/img_emb', index_path='$WORK/autofaiss/image.index',
            index_infos_path='$WORK/autofaiss/infos.json', max_index_memory_usage='$BUDGET',
            current_memory_available='16G', metric_type='ip', nb_cores=$CORES)
"
AF_PARAM=$("$PY" -c "import json; print(json.load(open('$WORK/autofaiss/infos.json'))['index_param'])")

echo "== evaluation (same script, Python faiss, $CORES threads)"
"$PY" bench/eval_index.py "$EMB" "$WORK/ours/image.index" "$OURS_PARAM" "$WORK/ours-eval.json" "$CORES"
"$PY" bench/eval_index.py "$EMB" "$WORK/autofaiss/image.index" "$AF_PARAM" "$WORK/autofaiss-eval.json" "$CORES"

"$PY" - "$WORK" "$BUDGET" <<'PY'
import json, sys
w, budget = sys.argv[1], sys.argv[2]
rows = []
for name, key_file, key in (("ours", "ours/image.json", "index_key"), ("autofaiss", "autofaiss/infos.json", "index_key")):
    b = json.load(open(f"{w}/{name}-build.json")); e = json.load(open(f"{w}/{name}-eval.json"))
    info = json.load(open(f"{w}/{key_file}"))
    rows.append((name, info.get(key), info.get("index_param"), b, e))
print(f"\nbudget {budget}")
print(f"{'':10} {'index':38} {'build s':>8} {'peak RSS MB':>12} {'index MB':>9} {'recall@10':>10} {'QPS b1':>8} {'QPS b64':>8}")
for name, key, param, b, e in rows:
    print(f"{name:10} {str(key)[:38]:38} {b['seconds']:8.1f} {b['peak_rss_mb']:12.0f} {e['index_bytes']/2**20:9.1f} "
          f"{e['recall_at_10']:10.3f} {e['qps_batch1']:8.0f} {e['qps_batch64']:8.0f}")
(_, _, _, ob, oe), (_, _, _, ab, ae) = rows
print(f"ours/autofaiss: build time {ob['seconds']/ab['seconds']:.2f}x, peak RSS {ob['peak_rss_mb']/ab['peak_rss_mb']:.2f}x, "
      f"recall {oe['recall_at_10']-ae['recall_at_10']:+.3f}, QPS b1 {oe['qps_batch1']/ae['qps_batch1']:.2f}x, "
      f"QPS b64 {oe['qps_batch64']/ae['qps_batch64']:.2f}x")
PY
