"""Writes the faster variants of a model folder's two towers, beside the fp32 ones (immich's layout):

    MODEL/visual/model.fused.onnx    fp32, ONNX Runtime's transformer fusions applied (attention, LayerNorm, GELU)
    MODEL/visual/model.int8.onnx     MatMul/Gemm weights as per-channel signed int8, activations quantized per batch
    MODEL/textual/model.fused.onnx
    MODEL/textual/model.int8.onnx

The recipe (measured in bench/README.md and gated by `clip-retrieval evaluate`): dynamic quantization with signed
per-channel 7-bit weights (QInt8, per_channel, reduce_range), MatMul and Gemm only. The patch embedding (a Conv), the token table (a
Gather), LayerNorms, softmax and the two output projections stay in float: the projections map into the shared space
every index is built in, and they are a negligible share of the compute. Unsigned weights (ORT's old default) are
what visibly degrades CLIP embeddings, so they are never used.

The fusion report names every fused operator count: a count of 0 for attention means the optimizer did not recognise
this export's pattern, and the fused file is then only as fast as the plain one (the engine picks it anyway: it is
never slower). Each written file is checked against the fp32 tower on probe inputs (max |difference| for fused,
cosine for int8) before the script exits.

    python quantize.py MODEL_DIR [--towers visual,textual] [--no_fused] [--no_int8]

Needs: onnx, onnxruntime (the same 1.32 the engine loads), numpy.
"""
import argparse, json, os, sys, tempfile

import numpy as np
import onnx


def tower_hyperparameters(model_dir, tower):
    """(num_heads, hidden_size) of a tower, from config.json (open_clip's fields)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    if tower == "visual":
        v = cfg["vision_cfg"]
        width = v["width"]
        return width // v.get("head_width", 64), width
    t = cfg["text_cfg"]
    return t.get("heads", 8), t.get("width", 512)


def write_fused(src, dst, num_heads, hidden_size):
    """Offline transformer fusions; returns the fused operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    # model_type "vit" carries the generic encoder fusions (attention, LayerNorm, SkipLayerNorm, BiasGelu) that
    # both towers are made of; opt_level 0 runs only these Python fusions (ORT's own graph optimisations run at
    # session creation anyway), so the file stays portable: no hardware-specific layouts baked in.
    model = optimize_model(src, model_type="vit", num_heads=num_heads, hidden_size=hidden_size, opt_level=0,
                           use_gpu=False)
    stats = model.get_fused_operator_statistics()
    model.save_model_to_file(dst)
    return {k: v for k, v in stats.items() if v}


def float_kept_nodes(path):
    """MatMul/Gemm nodes that stay in float: those whose weight is an output projection."""
    graph = onnx.load(path, load_external_data=False).graph
    kept = []
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and any(
            name.endswith((".proj", "text_projection", "visual.proj")) for name in node.input
        ):
            kept.append(node.name)
    return kept


def write_int8(src, dst):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(src, prepared, skip_symbolic_shape=True)
        excluded = float_kept_nodes(prepared)
        # reduce_range: 7-bit weight values. ONNX Runtime's x86 int8 kernels multiply u8 activations by s8 weights
        # in pairs summed into int16 (vpmaddubsw), which saturates with full-range weights; measured on the shipped
        # model, full range gives text cosine mean 0.9982 and top-10 overlap 0.92, 7-bit 0.9999 and 0.98.
        quantize_dynamic(prepared, dst, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=excluded,
                         extra_options={"MatMulConstBOnly": True})
    return excluded


def probe_inputs(session, tower, model_dir):
    inp = session.get_inputs()[0]
    rng = np.random.default_rng(0)
    if tower == "visual":
        shape = [8] + [d if isinstance(d, int) else 224 for d in inp.shape[1:]]
        return {inp.name: rng.standard_normal(shape).astype(np.float32)}
    ctx = inp.shape[1] if isinstance(inp.shape[1], int) else 16
    ids = rng.integers(1, 40000, size=(8, ctx))
    ids[:, 0] = 49406
    for row, end in enumerate(range(3, 3 + 8)):
        ids[row, min(end, ctx - 1)] = 49407
        ids[row, min(end, ctx - 1) + 1:] = 0
    dtype = np.int32 if "int32" in inp.type else np.int64
    return {inp.name: ids.astype(dtype)}


def check(tower, model_dir, reference, candidate):
    import onnxruntime as ort

    ref = ort.InferenceSession(reference, providers=["CPUExecutionProvider"])
    cand = ort.InferenceSession(candidate, providers=["CPUExecutionProvider"])
    feeds = probe_inputs(ref, tower, model_dir)
    a, b = ref.run(None, feeds)[0], cand.run(None, feeds)[0]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.abs(a - b).max()), float(cos.min())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--towers", default="visual,textual")
    p.add_argument("--no_fused", action="store_true")
    p.add_argument("--no_int8", action="store_true")
    args = p.parse_args()
    for tower in args.towers.split(","):
        src = os.path.join(args.model_dir, tower, "model.onnx")
        if not os.path.isfile(src):
            sys.exit(f"{src}: no such file (expected a model folder in immich's layout)")
        heads, width = tower_hyperparameters(args.model_dir, tower)
        if not args.no_fused:
            dst = os.path.join(args.model_dir, tower, "model.fused.onnx")
            fused = write_fused(src, dst, heads, width)
            diff, _ = check(tower, args.model_dir, src, dst)
            print(f"{dst}: fused {fused or 'nothing'}; max |fused - fp32| = {diff:.2e}")
            if diff > 1e-3:
                sys.exit(f"{dst}: fused graph differs from fp32 by {diff:.2e} (> 1e-3); not usable")
        if not args.no_int8:
            dst = os.path.join(args.model_dir, tower, "model.int8.onnx")
            kept = write_int8(src, dst)
            _, cos = check(tower, args.model_dir, src, dst)
            print(f"{dst}: int8 MatMul/Gemm, kept in float: {kept}; probe cosine min = {cos:.4f}")


if __name__ == "__main__":
    main()
