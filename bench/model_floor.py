"""The model's own speed with ONNX Runtime (no pipeline): images/s and texts/s at 77 tokens and trimmed.

Usage: python bench/model_floor.py MODEL_DIR [BATCH=64] [BATCHES=4]  (run with .cache/bench-venv/bin/python)
"""
import sys, time
import numpy as np
import onnxruntime as ort

model, batch = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64
batches = int(sys.argv[3]) if len(sys.argv) > 3 else 4
vs = ort.InferenceSession(f"{model}/visual/model.onnx", providers=["CPUExecutionProvider"])
ts = ort.InferenceSession(f"{model}/textual/model.onnx", providers=["CPUExecutionProvider"])
size = vs.get_inputs()[0].shape[2]


def rate(fn):
    fn()  # warm-up
    t = time.time()
    for _ in range(batches):
        fn()
    return batch * batches / (time.time() - t)


px = np.random.randn(batch, 3, size, size).astype(np.float32)
print(f"image tower: {rate(lambda: vs.run(None, {'image': px})):.1f} images/s")
for seq in (77, 16):
    ids = np.zeros((batch, seq), np.int32); ids[:, 0] = 49406; ids[:, 1:seq - 1] = 320; ids[:, seq - 1] = 49407
    print(f"text tower at {seq} tokens: {rate(lambda: ts.run(None, {'text': ids})):.1f} texts/s")
