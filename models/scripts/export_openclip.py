"""Export an OpenCLIP model to the immich model-folder layout used by clip-retrieval-rs.

    MODEL/config.json                  open_clip model config (embed_dim, vision_cfg, text_cfg)
    MODEL/visual/model.onnx            image -> L2-normalised embedding, dynamic batch
    MODEL/visual/preprocess_cfg.json   size, mean, std, interpolation, resize_mode, fill_color
    MODEL/textual/model.onnx           int32 tokens [batch, seq] -> L2-normalised embedding, dynamic batch AND sequence
    MODEL/textual/tokenizer.json       Hugging Face tokenizer built from OpenAI's BPE vocabulary

The text tower is causal and pools at the end token, so it is exported with the positional embedding and causal mask
sliced to the input length: a batch can be trimmed to its longest caption with identical embeddings (checked below).

Command line (for benchmarks, or real checkpoints when online):
    python export_openclip.py --model ViT-B-32 --out DIR [--pretrained laion2b_s34b_b79k] [--tokenizer tokenizer.json]
Without --pretrained the weights are random (same compute as the real model, used by bench/).
"""
import argparse, json, os, shutil, sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.2613026, 0.2757771]


class VisualTower(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return F.normalize(self.model.encode_image(image), dim=-1)


class TrimmableTextTower(nn.Module):
    """open_clip's encode_text for any sequence length <= context_length (argmax pooling on the end token)."""

    def __init__(self, model, fp16_token_table=False):
        super().__init__()
        self.m = model
        table = model.token_embedding.weight.detach()
        self.fp16 = fp16_token_table
        self.register_buffer("table", table.half() if fp16_token_table else table)

    def forward(self, text):
        ids = text.long()
        seq = ids.shape[1]
        x = self.table[ids].float()  # plain indexing: an aten.embedding node would be named "embedding", clashing with the output
        x = x + self.m.positional_embedding[:seq]
        mask = self.m.attn_mask[:seq, :seq]
        x = self.m.transformer(x, attn_mask=mask)
        x = self.m.ln_final(x)
        pooled = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
        out = pooled @ self.m.text_projection
        return F.normalize(out, dim=-1)


def preprocess_cfg(model, image_size):
    import open_clip
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    size = cfg.get("size", image_size)
    cfg["size"] = list(size) if isinstance(size, (list, tuple)) else [size, size]
    cfg.setdefault("mean", OPENAI_MEAN)
    cfg.setdefault("std", OPENAI_STD)
    cfg.setdefault("mode", "RGB")
    cfg.setdefault("interpolation", "bicubic")
    cfg.setdefault("resize_mode", "shortest")
    cfg.setdefault("fill_color", 0)
    cfg["mean"], cfg["std"] = list(cfg["mean"]), list(cfg["std"])
    return cfg


def export(model, model_cfg, out_dir, tokenizer_json, fp16_token_table=False, opset=17):
    """Writes the model folder; returns the max |ORT - torch| difference of both towers on probes."""
    model = model.eval()
    # The fused attention fast path has no ONNX symbolic; the plain path computes the same thing.
    torch.backends.mha.set_fastpath_enabled(False)
    os.makedirs(os.path.join(out_dir, "visual"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "textual"), exist_ok=True)
    image_size = model_cfg["vision_cfg"]["image_size"]
    ctx = model_cfg["text_cfg"].get("context_length", 77)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(model_cfg, f, indent=2)
    with open(os.path.join(out_dir, "visual", "preprocess_cfg.json"), "w") as f:
        json.dump(preprocess_cfg(model, image_size), f, indent=2)
    shutil.copyfile(tokenizer_json, os.path.join(out_dir, "textual", "tokenizer.json"))

    vis, txt = VisualTower(model), TrimmableTextTower(model, fp16_token_table)
    if fp16_token_table:  # the reference weights are the fp16-rounded table the export ships
        model.token_embedding.weight.data = model.token_embedding.weight.data.half().float()
    hw = image_size if isinstance(image_size, (list, tuple)) else (image_size, image_size)
    with torch.no_grad():
        px = torch.randn(2, 3, *hw)
        ids = torch.zeros(2, ctx, dtype=torch.int32)
        ids[:, 0], ids[0, 1:4], ids[0, 4], ids[1, 1], ids[1, 2] = 49406, 320, 49407, 49407, 0
        ids[1, 2] = 0
        # torch.export keeps the sequence length symbolic through attention (the TorchScript exporter bakes it in).
        batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=2, max=ctx)
        save_onnx(vis, (px,), os.path.join(out_dir, "visual", "model.onnx"), "image", {"image": {0: batch}}, opset)
        save_onnx(txt, (ids,), os.path.join(out_dir, "textual", "model.onnx"), "text", {"text": {0: batch, 1: seq}}, opset)
        ref_img = F.normalize(model.encode_image(px), dim=-1).numpy()
        ref_txt = F.normalize(model.encode_text(ids.long()), dim=-1).numpy()
    return verify(out_dir, px.numpy(), ids.numpy(), ref_img, ref_txt)


def save_onnx(module, args, path, input_name, dynamic_shapes, opset):
    program = torch.onnx.export(module, args, input_names=[input_name], output_names=["embedding"],
                                dynamic_shapes=dynamic_shapes, opset_version=max(opset, 18), dynamo=True, external_data=False)
    program.save(path, external_data=False)


def verify(out_dir, px, ids, ref_img, ref_txt):
    import onnxruntime as ort
    vs = ort.InferenceSession(os.path.join(out_dir, "visual", "model.onnx"), providers=["CPUExecutionProvider"])
    ts = ort.InferenceSession(os.path.join(out_dir, "textual", "model.onnx"), providers=["CPUExecutionProvider"])
    d_img = np.abs(vs.run(None, {"image": px})[0] - ref_img).max()
    full = ts.run(None, {"text": ids})[0]
    trimmed = ts.run(None, {"text": ids[:, :8]})[0]
    d_txt = np.abs(full - ref_txt).max()
    d_trim = np.abs(trimmed - full).max()
    print(f"export check: max|ort-torch| image {d_img:.2e} text {d_txt:.2e}; trimmed vs 77 tokens {d_trim:.2e}")
    assert d_img < 1e-4 and d_txt < 1e-4 and d_trim < 1e-5, "ONNX export does not reproduce the torch model"
    return max(d_img, d_txt, d_trim)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default=None, help="open_clip pretrained tag (downloads from a hub: online only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(__file__), "..", "tiny-clip", "textual", "tokenizer.json"))
    a = ap.parse_args()
    import open_clip
    torch.manual_seed(0)
    model = open_clip.create_model(a.model, pretrained=a.pretrained)
    cfg = open_clip.get_model_config(a.model)
    export(model, cfg, a.out, a.tokenizer)
    print("wrote", a.out)


if __name__ == "__main__":
    sys.exit(main())
