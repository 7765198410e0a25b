"""Start Python clip-retrieval's back (pip install clip-retrieval) on a ViT-B/32 with random weights (seed 0, like
export_openclip.py), offline: open_clip's pretrained tag is made to resolve to no checkpoint, as in
py_clip_retrieval_inference.py. Nothing else is changed; aesthetic embeddings are off because they download from GitHub.

Usage: python py_clip_back.py INDICES_PATHS PORT
"""
import sys

import open_clip
import torch

open_clip.list_pretrained = lambda *a, **k: [("ViT-B-32", None)]
torch.manual_seed(0)
from clip_retrieval.clip_back import clip_back  # noqa: E402

clip_back(indices_paths=sys.argv[1], port=int(sys.argv[2]), clip_model="open_clip:ViT-B-32", use_jit=False,
          enable_mclip_option=False, provide_aesthetic_embeddings=False, columns_to_return=["url", "caption"])
