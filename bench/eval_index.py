"""Evaluates a faiss index file the same way for every builder: recall@10 against exact search (faiss Flat on the
f32 values of the f16 embeddings) on held-out queries, and QPS at batch 1 and batch 64, with the builder's tuned
search parameters, on `--threads` threads.

Usage: python eval_index.py EMB_FOLDER INDEX_FILE INDEX_PARAM OUT.json [THREADS=2]
"""
import glob, json, sys, time
import faiss, numpy as np

emb, index_file, param, out = sys.argv[1:5]
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2
faiss.omp_set_num_threads(threads)
queries = np.load(emb + "/queries.npy").astype(np.float32)
gt_file = emb + "/ground_truth.npy"
try:
    gt = np.load(gt_file)
except FileNotFoundError:
    flat = faiss.IndexFlatIP(queries.shape[1])
    for f in sorted(glob.glob(emb + "/img_emb/*.npy")):
        flat.add(np.load(f).astype(np.float32))
    _, gt = flat.search(queries, 10)
    np.save(gt_file, gt)
    del flat
index = faiss.read_index(index_file)
if param:
    faiss.ParameterSpace().set_index_parameters(index, param)
_, found = index.search(queries, 10)
recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, gt)]))


def qps(batch, seconds=5.0):
    done, start = 0, time.time()
    while time.time() - start < seconds:
        for i in range(0, len(queries), batch):
            index.search(queries[i:i + batch], 10)
            done += len(queries[i:i + batch])
            if time.time() - start >= seconds:
                break
    return done / (time.time() - start)


result = {"recall_at_10": recall, "qps_batch1": qps(1), "qps_batch64": qps(64), "index_bytes": __import__("os").path.getsize(index_file)}
json.dump(result, open(out, "w"))
print(json.dumps(result))
