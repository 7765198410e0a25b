"""Writes N x D clustered unit embeddings (f16, like clip-retrieval's) as img_emb/img_emb_K.npy partitions, plus
held-out queries from the same distribution (queries.npy, f32).

Clustered, not uniform: 1000 centres with per-cluster spread varying 0.3..1.0, so some regions are dense (hard for IVF
and PQ) and some sparse, as with real CLIP embeddings.

Usage: python make_clustered_embeddings.py OUT_FOLDER N D [PARTITION_ROWS=100000] [QUERIES=1000]
"""
import os, sys
import numpy as np

out, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per = int(sys.argv[4]) if len(sys.argv) > 4 else 100_000
nq = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
rng = np.random.default_rng(0)
k = 1000
centres = rng.standard_normal((k, d)).astype(np.float32)
centres /= np.linalg.norm(centres, axis=1, keepdims=True)
spread = rng.uniform(0.3, 1.0, k).astype(np.float32)


def sample(m, rng):
    c = rng.integers(0, k, m)
    x = centres[c] + rng.standard_normal((m, d)).astype(np.float32) * (spread[c, None] / np.sqrt(d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


os.makedirs(os.path.join(out, "img_emb"), exist_ok=True)
parts = (n + per - 1) // per
width = int(np.log10(parts)) + 1
for p in range(parts):
    m = min(per, n - p * per)
    np.save(os.path.join(out, "img_emb", f"img_emb_{p:0{width}d}.npy"), sample(m, rng).astype(np.float16))
np.save(os.path.join(out, "queries.npy"), sample(nq, np.random.default_rng(1)).astype(np.float32))
print(f"wrote {n} x {d} in {parts} partitions to {out}")
