#!/usr/bin/env bash
# Side-by-side: our `clip-retrieval index` vs autofaiss `build_index` (pip), on the same N x D clustered f16
# embeddings, the same memory budget and core count, in one run. Both indices are then evaluated by the same script
# (bench/eval_index.py, Python faiss): recall@10 vs exact search on 1000 held-out queries, QPS at batch 1 and 64.
# Build time and peak RSS (whole process tree) come from bench/measure.py. Ours is also evaluated through our own
# search path (examples/eval_index.rs: tuned parameters plus exact re-ranking, as back serves), and `index --plan`'s
# prediction for this build (from bench/index_costs.json) is printed beside what the build measured.
#   bash bench/index_bench.sh [N=1000000] [D=512] [BUDGET=256M] [CORES=2] [QUERY_MS=1]
# QUERY_MS is both builders' single-query latency budget for tuning (max_index_query_time_ms): 1 ms aims at 1000 QPS.
# Installs into .cache/index-bench-venv (autofaiss, faiss-cpu: a few hundred MB, once).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
N="${1:-1000000}"; D="${2:-512}"; BUDGET="${3:-256M}"; CORES="${4:-2}"; QUERY_MS="${5:-1}"
WORK="$ROOT/.cache/index-bench"; VENV="$ROOT/.cache/index-bench-venv"
bash scripts/setup.sh
if ! "$VENV/bin/python" -c "import autofaiss, faiss" 2>/dev/null; then
  python3 -m venv "$VENV"
  # autofaiss pins numpy<2; pyarrow >= 18 needs numpy 2 and fails to import beside it.
  "$VENV/bin/pip" install -q autofaiss "faiss-cpu==1.12.0" "setuptools<70" "pyarrow<18"
fi
cargo build --release -q -p clip-retrieval
BIN="$CARGO_TARGET_DIR/release/clip-retrieval"
EMB="$WORK/emb-$N-$D"
[ -f "$EMB/queries.npy" ] || "$VENV/bin/python" bench/make_clustered_embeddings.py "$EMB" "$N" "$D"
PY="$VENV/bin/python"
rm -rf "$WORK/ours" "$WORK/autofaiss"; mkdir -p "$WORK/autofaiss"

echo "== index --plan's prediction for this build"
"$BIN" index --plan --count "$N" --dim "$D" --max_index_memory_usage "$BUDGET" --current_memory_available 16G \
  --nb_cores "$CORES" --max_index_query_time_ms "$QUERY_MS" | tee "$WORK/plan.txt"
echo "== ours: clip-retrieval index (budget $BUDGET, $CORES cores)"
"$PY" bench/measure.py "$WORK/ours-build.json" -- "$BIN" index --embeddings_folder "$EMB" --index_folder "$WORK/ours" \
  --max_index_memory_usage "$BUDGET" --current_memory_available 16G --nb_cores "$CORES" --no_progress \
  --max_index_query_time_ms "$QUERY_MS"
OURS_PARAM=$("$PY" -c "import json; print(json.load(open('$WORK/ours/image.json'))['index_param'])")

echo "== autofaiss build_index (budget $BUDGET, $CORES cores)"
"$PY" bench/measure.py "$WORK/autofaiss-build.json" -- "$PY" -c "
from autofaiss import build_index
build_index(embeddings='$EMB/img_emb', index_path='$WORK/autofaiss/image.index',
            index_infos_path='$WORK/autofaiss/infos.json', max_index_memory_usage='$BUDGET',
            current_memory_available='16G', metric_type='ip', nb_cores=$CORES, max_index_query_time_ms=$QUERY_MS)
"
AF_PARAM=$("$PY" -c "import json; print(json.load(open('$WORK/autofaiss/infos.json'))['index_param'])")

echo "== evaluation (same script, Python faiss, $CORES threads)"
"$PY" bench/eval_index.py "$EMB" "$WORK/ours/image.index" "$OURS_PARAM" "$WORK/ours-eval.json" "$CORES"
"$PY" bench/eval_index.py "$EMB" "$WORK/autofaiss/image.index" "$AF_PARAM" "$WORK/autofaiss-eval.json" "$CORES"
echo "== ours through our search path (tuned parameters + exact re-ranking from image_vectors.npy, as back serves)"
"$PY" -c "import numpy as np; np.save('$EMB/ground_truth_f32.npy', np.load('$EMB/ground_truth.npy').astype(np.float32))"
cargo build --release -q -p clip-index --example eval_index
"$CARGO_TARGET_DIR/release/examples/eval_index" "$EMB/queries.npy" "$EMB/ground_truth_f32.npy" "$WORK/ours" \
  "$WORK/ours-served-eval.json" "$CORES"

"$PY" - "$WORK" "$BUDGET" <<'PY'
import json, sys
w, budget = sys.argv[1], sys.argv[2]
plan = dict(l.split(": ", 1) for l in open(f"{w}/plan.txt").read().splitlines() if ": " in l)
built = json.load(open(f"{w}/ours-build.json"))
print(f"plan vs build: {plan['structure']} vs {json.load(open(f'{w}/ours/image.json'))['index_key']}; "
      f"build {float(plan['build seconds'].split()[0]):.0f} s predicted, {built['seconds']:.0f} s measured; "
      f"peak RSS {int(plan['peak rss bytes'].split()[0])/2**20:.0f} MB predicted, {built['peak_rss_mb']:.0f} MB measured")
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
s = json.load(open(f"{w}/ours-served-eval.json"))
ob = rows[0][3]
print(f"{'ours+rr':10} {'(re-ranked, k_factor ' + str(s['k_factor']) + ')':38} {ob['seconds']:8.1f} {ob['peak_rss_mb']:12.0f} "
      f"{s['index_bytes']/2**20:9.1f} {s['recall_at_10']:10.3f} {s['qps_batch1']:8.0f} {s['qps_batch64']:8.0f}"
      f"   + {s['disk_bytes']/2**20:.0f} MB float16 vectors on disk")
(_, _, _, ob, oe), (_, _, _, ab, ae) = rows
print(f"ours re-ranked vs autofaiss: recall {s['recall_at_10']-ae['recall_at_10']:+.3f}, "
      f"QPS b1 {s['qps_batch1']/ae['qps_batch1']:.2f}x, QPS b64 {s['qps_batch64']/ae['qps_batch64']:.2f}x")
print(f"ours/autofaiss: build time {ob['seconds']/ab['seconds']:.2f}x, peak RSS {ob['peak_rss_mb']/ab['peak_rss_mb']:.2f}x, "
      f"recall {oe['recall_at_10']-ae['recall_at_10']:+.3f}, QPS b1 {oe['qps_batch1']/ae['qps_batch1']:.2f}x, "
      f"QPS b64 {oe['qps_batch64']/ae['qps_batch64']:.2f}x")
PY
