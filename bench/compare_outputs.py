"""Check that two inference output folders hold the same embeddings for the same images (cosine per sample).

    python compare_outputs.py OURS OTHER [SUMMARY.json]   (the summary gets the cosine mean/p01/min per tower)
"""
import json, os, sys
import numpy as np, pyarrow.parquet as pq


def load(root):
    paths = pq.read_table(os.path.join(root, "metadata", "metadata_0.parquet")).column("image_path").to_pylist()
    img = np.load(os.path.join(root, "img_emb", "img_emb_0.npy")).astype(np.float32)
    txt = np.load(os.path.join(root, "text_emb", "text_emb_0.npy")).astype(np.float32)
    return {os.path.basename(p): (i, t) for p, i, t in zip(paths, img, txt)}


a, b = load(sys.argv[1]), load(sys.argv[2])
common = sorted(set(a) & set(b))
ci = np.array([a[k][0] @ b[k][0] for k in common])
ct = np.array([a[k][1] @ b[k][1] for k in common])
print(f"{len(common)} common samples; image cosine min {ci.min():.5f} mean {ci.mean():.5f}; text cosine min {ct.min():.5f} mean {ct.mean():.5f}")
if len(sys.argv) > 3:
    summary = {f"{tower}_cos_{stat}": float(f(c)) for tower, c in (("image", ci), ("text", ct))
               for stat, f in (("mean", np.mean), ("p01", lambda x: np.percentile(x, 1)), ("min", np.min))}
    json.dump(dict(summary, samples=len(common)), open(sys.argv[3], "w"))
