"""Writes a model folder (immich's layout) whose towers are single random projections to D dimensions: a stand-in
that loads and encodes like a CLIP export of that width, for benchmarks whose queries are embeddings (the model
never decides their cost). Preprocessing and tokenizer are the shipped tiny-clip's.

Usage: python make_stand_in_model.py OUT_FOLDER D
"""
import json, os, shutil, sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out, dim = sys.argv[1], int(sys.argv[2])
here = os.path.dirname(os.path.abspath(__file__))
tiny = os.path.join(here, "..", "models", "tiny-clip")
rng = np.random.default_rng(0)
os.makedirs(f"{out}/visual", exist_ok=True)
os.makedirs(f"{out}/textual", exist_ok=True)
config = json.load(open(f"{tiny}/config.json"))
config["embed_dim"] = dim
json.dump(config, open(f"{out}/config.json", "w"), indent=1)
shutil.copy(f"{tiny}/visual/preprocess_cfg.json", f"{out}/visual/preprocess_cfg.json")
shutil.copy(f"{tiny}/textual/tokenizer.json", f"{out}/textual/tokenizer.json")
side = config["vision_cfg"]["image_size"]

w = numpy_helper.from_array(rng.standard_normal((3 * side * side, dim)).astype(np.float32), "w")
shape = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape")
visual = helper.make_graph(
    [helper.make_node("Reshape", ["image", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["embedding"])],
    "visual",
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, side, side])],
    [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
    [w, shape],
)
onnx.save(helper.make_model(visual, opset_imports=[helper.make_opsetid("", 17)]), f"{out}/visual/model.onnx")

wt = numpy_helper.from_array(rng.standard_normal((1, dim)).astype(np.float32), "w")
b = numpy_helper.from_array(rng.standard_normal((dim,)).astype(np.float32), "b")
axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
textual = helper.make_graph(
    [
        helper.make_node("Cast", ["text"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=1),
        helper.make_node("MatMul", ["s", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["embedding"]),
    ],
    "textual",
    [helper.make_tensor_value_info("text", TensorProto.INT64, ["batch", "sequence"])],
    [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
    [wt, b, axes],
)
onnx.save(helper.make_model(textual, opset_imports=[helper.make_opsetid("", 17)]), f"{out}/textual/model.onnx")
print(f"{out}: stand-in model, {dim} dimensions")
