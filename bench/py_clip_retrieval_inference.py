"""Run Python clip-retrieval's inference on a ViT-B/32 with random weights (seed 0, like export_openclip.py).

clip-retrieval loads open_clip models by pretrained tag (a hub download); offline, we make the tag resolve to no
checkpoint so open_clip builds the same architecture with its seeded random initialisation. Nothing else is changed.
Usage: python py_clip_retrieval_inference.py "SHARDS/{00000..00001}.tar" OUTPUT BATCH_SIZE WORKERS
(webdataset input: the released clip-retrieval 2.45.0 `files` reader keys samples by file name with extension, so
image+text folders find no sample; tar shards are also what large datasets use.)
"""
import sys

import open_clip
import torch

_list = open_clip.list_pretrained
open_clip.list_pretrained = lambda *a, **k: [("ViT-B-32", None)]
torch.manual_seed(0)
from clip_retrieval.clip_inference.main import main  # noqa: E402

if __name__ == "__main__":  # clip-retrieval starts helper processes with "spawn", which re-imports this file
    main(input_dataset=sys.argv[1], output_folder=sys.argv[2], input_format="webdataset", batch_size=int(sys.argv[3]),
         num_prepro_workers=int(sys.argv[4]), clip_model="open_clip:ViT-B-32", use_jit=False, enable_metadata=False)
