"""Filter files for the back tests, made from an embeddings folder with numpy/onnx, and the answers they imply.

Usage: back_filters.py EMBEDDINGS_FOLDER OUT_FOLDER
Writes OUT/violence.npy (row 0: mean image embedding, row 1: mean of red images: "violent" = closer to red),
OUT/safety.onnx (sigmoid(x . (mean_blue - mean_all) * 50): "unsafe" = closer to blue than to the mean),
OUT/aesthetic/rating{0..9}.npy (rating 9: mean of green triangles; others: the mean image embedding),
and prints JSON: ids flagged violent / unsafe by those rules, and image embedding 17 as a list.
"""
import json
import os
import sys

import numpy as np
import onnx
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper

emb_dir, out = sys.argv[1], sys.argv[2]
img = np.load(f"{emb_dir}/img_emb/img_emb_0.npy").astype(np.float32)
meta = pq.read_table(f"{emb_dir}/metadata/metadata_0.parquet").to_pylist()
dim = img.shape[1]


def unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def mean_of(pred):
    return unit(img[[i for i, m in enumerate(meta) if pred(m)]].mean(axis=0))


mean_all = unit(img.mean(axis=0))
red = mean_of(lambda m: m["color"] == "red")
blue = mean_of(lambda m: m["color"] == "blue")
green_triangle = mean_of(lambda m: m["color"] == "green" and m["shape"] == "triangle")
os.makedirs(f"{out}/aesthetic", exist_ok=True)
np.save(f"{out}/violence.npy", np.stack([mean_all, red]))
for k in range(10):
    np.save(f"{out}/aesthetic/rating{k}.npy", (green_triangle if k == 9 else mean_all)[None, :])

# Safety: one MatMul and a Sigmoid, input [batch, dim] -> output [batch, 1].
w = ((blue - mean_all) * 50.0).astype(np.float32).reshape(dim, 1)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["embeddings", "w"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["nsfw"])],
    "safety",
    [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", dim])],
    [helper.make_tensor_value_info("nsfw", TensorProto.FLOAT, ["batch", 1])],
    [numpy_helper.from_array(w, "w")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, f"{out}/safety.onnx")

norm = img / np.linalg.norm(img, axis=1, keepdims=True)
violent = [int(i) for i in np.where(norm @ red > norm @ mean_all)[0]]
unsafe = [int(i) for i in np.where(1 / (1 + np.exp(-(norm @ w[:, 0]))) > 0.5)[0]]
print(json.dumps({"violent": violent, "unsafe": unsafe, "emb17": img[17].tolist()}))
