"""Tower speeds of a model folder by precision (model.onnx, model.fused.onnx, model.int8.onnx) with ONNX Runtime alone,
2 intra-op threads, plus session creation time: python bench/precision_floor.py MODEL_DIR (bench venv)."""
import sys, time, numpy as np, onnxruntime as ort
m=sys.argv[1]
def sess(path, spin=True, threads=2):
    o=ort.SessionOptions(); o.intra_op_num_threads=threads
    o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    t=time.time(); s=ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]); return s, time.time()-t
px=np.random.randn(32,3,224,224).astype(np.float32)
for name in ["model.onnx","model.fused.onnx","model.int8.onnx"]:
    s,load=sess(f"{m}/visual/{name}")
    s.run(None,{"image":px}); t=time.time(); 
    for _ in range(3): s.run(None,{"image":px})
    print(f"visual {name}: {96/(time.time()-t):.1f} images/s, session {load:.2f}s", flush=True)
ids=np.zeros((64,16),np.int32); ids[:,0]=49406; ids[:,1:15]=320; ids[:,15]=49407
for name in ["model.onnx","model.int8.onnx"]:
    s,load=sess(f"{m}/textual/{name}")
    s.run(None,{"text":ids}); t=time.time()
    for _ in range(3): s.run(None,{"text":ids})
    print(f"textual {name}: {192/(time.time()-t):.1f} texts/s at 16 tokens, session {load:.2f}s", flush=True)
