"""Train the small CLIP shipped in models/tiny-clip, on images rendered by `clip-retrieval sample-dataset`.

Architecture: open_clip's CLIP (ViT image tower, causal text transformer) at toy size, with the real 49408-token
OpenAI BPE vocabulary. Images are preprocessed exactly like the Rust engine and OpenCLIP (PIL bicubic shortest-side
resize, center crop, CLIP mean/std). Captions are sampled from templates naming some or all of the attributes, and
the contrastive loss treats every image consistent with a caption as a positive.

    clip-retrieval sample-dataset --output_folder TRAIN --count 16000 --seed 1
    clip-retrieval sample-dataset --output_folder HELDOUT --count 1000 --seed 2
    python train_tiny_clip.py --train TRAIN --heldout HELDOUT --out models/tiny-clip --tokenizer tokenizer.json

CPU only; ~15 minutes on 2 cores. Prints held-out zero-shot accuracy and recall@10, then exports (export_openclip.py).
"""
import argparse, glob, json, math, os, random, sys, time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_openclip import export  # noqa: E402

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.2613026, 0.2757771], np.float32)
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "diamond"]
ATTRS = ["size", "color", "shape", "background"]
TEMPLATES = [
    ("a {size} {color} {shape} on a {background} background", ATTRS),
    ("a {color} {shape}", ["color", "shape"]),
    ("{color} {shape}", ["color", "shape"]),
    ("a photo of a {color} {shape}", ["color", "shape"]),
    ("a {size} {color} {shape}", ["size", "color", "shape"]),
    ("a {color} {shape} on a {background} background", ["color", "shape", "background"]),
    ("a picture of a {size} {color} {shape} on a {background} background", ATTRS),
    ("a {shape}", ["shape"]),
    ("something {color}", ["color"]),
]


def pil_preprocess(path, size):
    """OpenCLIP's transform (torchvision Resize(size) + CenterCrop) on an upright RGB image, as uint8 HWC."""
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = im.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)), np.uint8)


def load_set(folder, size):
    keys = sorted(p[:-4] for p in glob.glob(os.path.join(folder, "*.jpg")))
    imgs = np.stack([pil_preprocess(k + ".jpg", size) for k in keys])
    attrs = [json.load(open(k + ".json")) for k in keys]
    captions = [open(k + ".txt").read() for k in keys]
    return imgs, attrs, captions


def to_tensor(u8):
    x = (u8.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


class Tok:
    def __init__(self, path, ctx=77):
        self.t = Tokenizer.from_file(path)
        self.t.no_padding(); self.t.no_truncation()
        self.ctx = ctx

    def __call__(self, texts):
        rows = [self.t.encode(t).ids[: self.ctx] for t in texts]
        rows = [r if r[-1] == 49407 else r[:-1] + [49407] for r in rows]
        out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out


def encode_text_trimmed(model, ids):
    seq = ids.shape[1]
    x = model.token_embedding(ids) + model.positional_embedding[:seq]
    x = model.transformer(x, attn_mask=model.attn_mask[:seq, :seq])
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ model.text_projection


def build_model(image_size):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    vision = dict(layers=3, width=128, head_width=32, patch_size=8, image_size=image_size, mlp_ratio=4.0)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=3)
    cfg = {"embed_dim": 64, "vision_cfg": vision, "text_cfg": text}
    model = CLIP(embed_dim=64, vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text))
    return model, cfg


@torch.no_grad()
def evaluate(model, tok, imgs, attrs, captions):
    model.eval()
    ie = torch.cat([F.normalize(model.encode_image(to_tensor(imgs[i:i + 256])), dim=-1) for i in range(0, len(imgs), 256)])
    classes = [(c, s) for c in COLORS for s in SHAPES]
    ce = F.normalize(encode_text_trimmed(model, tok([f"a {c} {s}" for c, s in classes])), dim=-1)
    pred = (ie @ ce.T).argmax(1)
    truth = torch.tensor([classes.index((a["color"], a["shape"])) for a in attrs])
    zero_shot = (pred == truth).float().mean().item()
    te = torch.cat([F.normalize(encode_text_trimmed(model, tok(captions[i:i + 256])), dim=-1) for i in range(0, len(captions), 256)])
    top10 = (te @ ie.T).topk(10, dim=1).indices
    recall = (top10 == torch.arange(len(captions))[:, None]).any(1).float().mean().item()
    model.train()
    return zero_shot, recall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.manual_seed(0); random.seed(0); np.random.seed(0)
    torch.set_num_threads(os.cpu_count() or 2)
    tok = Tok(a.tokenizer)
    t0 = time.time()
    train_imgs, train_attrs, _ = load_set(a.train, a.image_size)
    ho_imgs, ho_attrs, ho_caps = load_set(a.heldout, a.image_size)
    print(f"loaded {len(train_imgs)} train / {len(ho_imgs)} held-out images in {time.time() - t0:.0f}s", flush=True)
    model, cfg = build_model(a.image_size)
    print("parameters", sum(p.numel() for p in model.parameters()), flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / a.steps)))
    t0 = time.time()
    for step in range(a.steps):
        idx = np.random.randint(0, len(train_imgs), a.batch)
        u8 = train_imgs[idx]
        flip = np.random.rand(a.batch) < 0.5
        u8 = np.where(flip[:, None, None, None], u8[:, :, ::-1], u8)
        batch_attrs = [train_attrs[i] for i in idx]
        chosen = [random.choice(TEMPLATES) for _ in idx]
        texts = [t.format(**at) for (t, _), at in zip(chosen, batch_attrs)]
        # text k is a positive for image j when every attribute text k names matches image j
        pos = torch.tensor([[all(batch_attrs[j][n] == batch_attrs[k][n] for n in names) for j in range(a.batch)]
                            for k, (_, names) in enumerate(chosen)], dtype=torch.float32)
        ie = F.normalize(model.encode_image(to_tensor(u8)), dim=-1)
        te = F.normalize(encode_text_trimmed(model, tok(texts)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * te @ ie.T
        loss_t = -(pos / pos.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        pos_i = pos.T
        has = pos_i.sum(1) > 0
        loss_i = -((pos_i / pos_i.sum(1, keepdim=True).clamp(min=1)) * logits.T.log_softmax(1)).sum(1)[has].mean()
        loss = (loss_t + loss_i) / 2
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if step % 250 == 0 or step == a.steps - 1:
            zs, r10 = evaluate(model, tok, ho_imgs, ho_attrs, ho_caps)
            print(f"step {step} loss {loss.item():.3f} held-out zero-shot {zs:.3f} recall@10 {r10:.3f} t={time.time() - t0:.0f}s", flush=True)
    model.eval()
    zs, r10 = evaluate(model, tok, ho_imgs, ho_attrs, ho_caps)
    print(f"final held-out zero-shot colour+shape top-1 {zs:.3f}, text->image recall@10 {r10:.3f}")
    export(model, cfg, a.out, a.tokenizer, fp16_token_table=True)
    torch.save(model.state_dict(), os.path.join(os.path.dirname(os.path.abspath(a.out)), "tiny-clip.state_dict.pt.local"))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
