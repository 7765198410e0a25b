"""Reference embeddings for the parity test (tests/tests/parity.rs), computed with PyTorch + open_clip.

For ~20 fixture images of varied sizes and modes and ~20 tricky captions, writes:
    tests/fixtures/parity/images/*          the images (generated here with PIL)
    tests/fixtures/parity/reference.json    open_clip token ids and torch embeddings of the shipped model
    tests/fixtures/immich-static/{visual,textual}/model.onnx
                                            the same model exported exactly as immich's exporter does it
                                            (TorchScript, fixed batch 1, int32 [1, 77] tokens)

The reference pipeline is open_clip's own: `open_clip.tokenize` (ftfy + html clean-up + BPE) and
`open_clip.image_transform` (torchvision Resize/CenterCrop/Normalize on PIL), after EXIF transpose and RGB
conversion. Usage: python make_parity_fixtures.py --model models/tiny-clip --state models/tiny-clip.state_dict.pt.local
"""
import argparse, io, json, os, sys, warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

CAPTIONS = [
    "", "a red circle", "A LARGE BLUE SQUARE ON A WHITE BACKGROUND", "naïve café résumé", "🐱🐶 a cat and a dog 🎉",
    "東京の猫", "fish &amp; chips &lt;3", "\u201cquoted\u201d and it\u2019s curly", "\ufb01ne \ufb02owers", "\uff21\uff22\uff23 full width",
    "  lots\n\tof    whitespace  ", "don't stop, it's 3:45pm on 10,000 days", "knn.laion.ai/?query=dog&back=1",
    "a small purple diamond " * 12, "x" * 300, "!!!???...", "a photo of a yellow triangle on a grey background",
    "bell\x07 control", "Ünïcödé ÀÉÎÕÜ straße", "emoji only 😀😃😄😁",
]


def make_images(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)

    def scene(w, h, seed):
        r = np.random.default_rng(seed)
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.array([1, 0.5, 0.2]) + \
            np.linspace(0, 255, h, dtype=np.float32)[:, None, None] * np.array([0, 0.5, 0.8])
        im = Image.fromarray(np.clip(base / 1.5 + r.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(4):
            x, y = r.integers(0, w), r.integers(0, h)
            s = int(r.integers(4, max(5, min(w, h) // 2)))
            d.ellipse([x - s, y - s, x + s, y + s], fill=tuple(int(v) for v in r.integers(0, 255, 3)))
        return im

    files = {}
    files["rgb_640x480.jpg"] = scene(640, 480, 1)
    files["portrait_300x900.png"] = scene(300, 900, 2)
    files["tiny_17x23.png"] = scene(17, 23, 3)
    files["one_pixel.png"] = Image.new("RGB", (1, 1), (200, 30, 60))
    files["wide_1000x50.jpg"] = scene(1000, 50, 4)
    files["exact_64.png"] = scene(64, 64, 5)
    files["noise_224.png"] = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    rgba = scene(200, 150, 6).convert("RGBA")
    a = np.array(rgba); a[:, :100, 3] = 0; a[:, 100:, 3] = 128
    files["rgba_alpha.png"] = Image.fromarray(a)
    files["grey_L.png"] = scene(180, 120, 7).convert("L")
    files["grey_L.jpg"] = scene(150, 200, 8).convert("L")
    files["grey_alpha_LA.png"] = scene(120, 160, 9).convert("LA")
    files["palette_P.png"] = scene(210, 140, 10).convert("P", palette=Image.ADAPTIVE, colors=64)
    files["cmyk.jpg"] = scene(160, 240, 11).convert("CMYK")
    files["photo.webp"] = scene(256, 192, 12)
    files["bitmap.bmp"] = scene(99, 77, 13)
    files["progressive.jpg"] = scene(333, 222, 14)
    for name, im in files.items():
        path = os.path.join(out, name)
        if name == "progressive.jpg":
            im.save(path, quality=90, progressive=True)
        elif name.endswith(".webp"):
            im.save(path, quality=90)
        else:
            im.save(path)
    # 16-bit RGB PNG: PIL cannot write it, so build it with numpy + zlib by hand.
    write_png16(os.path.join(out, "rgb16.png"), (np.asarray(scene(120, 90, 15), np.uint16) * 257 + rng.integers(0, 200, (90, 120, 3))).astype(np.uint16))
    # EXIF orientations: the stored pixels are rotated; viewers (and we) show them upright.
    for orientation in (3, 6, 8):
        im = scene(240, 160, 20 + orientation)
        exif = Image.Exif(); exif[0x0112] = orientation
        im.save(os.path.join(out, f"exif_orientation_{orientation}.jpg"), exif=exif.tobytes(), quality=92)
    return sorted(os.listdir(out))


def write_png16(path, arr):
    import struct, zlib
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(path, "wb").write(png)


def load_model(model_dir, state):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    model = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]), text_cfg=CLIPTextCfg(**cfg["text_cfg"]))
    model.load_state_dict(torch.load(state, map_location="cpu"))
    return model.eval(), cfg


def export_immich_static(model, cfg, out_dir):
    """immich's exporter: TorchScript, no dynamic axes (batch 1), int32 tokens [1, context_length]."""
    torch.backends.mha.set_fastpath_enabled(False)
    size = cfg["vision_cfg"]["image_size"]

    class Vis(torch.nn.Module):
        def __init__(s): super().__init__(); s.m = model
        def forward(s, image): return s.m.encode_image(image, normalize=True)

    class Txt(torch.nn.Module):
        def __init__(s): super().__init__(); s.m = model
        def forward(s, text): return s.m.encode_text(text, normalize=True)

    for sub, mod, arg, name in [("visual", Vis(), torch.randn(1, 3, size, size), "image"),
                                ("textual", Txt(), torch.ones(1, cfg["text_cfg"]["context_length"], dtype=torch.int32), "text")]:
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, (arg,), os.path.join(out_dir, sub, "model.onnx"), input_names=[name], output_names=["embedding"],
                              opset_version=17, dynamo=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-clip"))
    ap.add_argument("--state", default=os.path.join(ROOT, "models", "tiny-clip.state_dict.pt.local"))
    a = ap.parse_args()
    import open_clip
    model, cfg = load_model(a.model, a.state)
    pcfg = json.load(open(os.path.join(a.model, "visual", "preprocess_cfg.json")))
    transform = open_clip.image_transform(pcfg["size"][0], is_train=False, mean=pcfg["mean"], std=pcfg["std"])
    fixtures = os.path.join(ROOT, "tests", "fixtures", "parity")
    names = make_images(os.path.join(fixtures, "images"))
    ref = {"captions": [], "images": []}
    with torch.no_grad():
        tokens = open_clip.tokenize(CAPTIONS, context_length=cfg["text_cfg"]["context_length"])
        temb = F.normalize(model.encode_text(tokens), dim=-1)
        for text, ids, e in zip(CAPTIONS, tokens, temb):
            n = int((ids != 0).sum())
            ref["captions"].append({"text": text, "ids": ids[:n].tolist(), "embedding": e.tolist()})
        for name in names:
            im = ImageOps.exif_transpose(Image.open(os.path.join(fixtures, "images", name))).convert("RGB")
            e = F.normalize(model.encode_image(transform(im)[None]), dim=-1)[0]
            ref["images"].append({"file": name, "size": list(im.size), "embedding": e.tolist()})
    json.dump(ref, open(os.path.join(fixtures, "reference.json"), "w"), indent=1)
    export_immich_static(model, cfg, os.path.join(ROOT, "tests", "fixtures", "immich-static"))
    print(f"wrote {len(ref['captions'])} captions and {len(ref['images'])} images to {fixtures}")


if __name__ == "__main__":
    sys.exit(main())
