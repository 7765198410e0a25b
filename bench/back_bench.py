"""Load test of the knn service: ours vs Python clip-retrieval back, side by side on the same index and model.

For each server in turn: start it, wait until it answers, then for each query kind (embedding_input, text, image)
and concurrency (1, 32) run wrk for DURATION seconds with bodies as ClipClient sends them (num_images 40, dedup on),
rotating through several queries; record QPS, p50/p99, errors and the server's peak RSS. Ours runs three times: its
model at fp32 and at int8 with the text-embedding cache off (so that text queries measure the text tower), then at
fp32 with the cache at its default size (text queries only: a stream of 24 repeating captions). Prints a table, one
RESULT line per query kind, concurrency and configuration, and writes results JSON.
Usage (from back_bench.sh): python back_bench.py WORK OUR_BIN PY_BACK_PY DURATION
"""
import base64, glob, json, os, re, signal, subprocess, sys, time, urllib.request

import numpy as np

work, our_bin, py_python, duration = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
here = os.path.dirname(os.path.abspath(__file__))
KINDS = ["embedding", "text", "image"]
CONCURRENCY = [1, 32]


def bodies(kind):
    base = {"modality": "image", "num_images": 40, "num_result_ids": 40, "indice_name": "bench", "deduplicate": True,
            "use_safety_model": False, "use_violence_detector": False, "use_mclip": False, "aesthetic_score": "",
            "aesthetic_weight": "", "text": None, "image": None, "image_url": None, "embedding_input": None}
    out = []
    if kind == "embedding":
        for q in np.load(f"{work}/emb/queries.npy")[:50]:
            out.append({**base, "embedding_input": [round(float(x), 6) for x in q]})
    elif kind == "text":
        for c in ["red", "blue", "green", "yellow", "purple", "orange"]:
            for s in ["circle", "square", "triangle", "diamond"]:
                out.append({**base, "text": f"a {c} {s} on a white background"})
    else:
        for path in sorted(glob.glob(f"{work}/images/*.jpg"))[:8]:
            out.append({**base, "image": base64.b64encode(open(path, "rb").read()).decode()})
    path = f"{work}/bodies-{kind}.txt"
    with open(path, "w") as f:
        for b in out:
            f.write(json.dumps(b) + "\n")
    return path


LUA = """
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/knn-service", {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def seconds(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(port, body_file, connections):
    lua = f"{work}/post.lua"
    open(lua, "w").write(LUA)
    threads = min(connections, 2)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "60s", "--latency",
           "-s", lua, f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, env={**os.environ, "BODIES": body_file}, capture_output=True, text=True).stdout
    qps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = seconds(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = seconds(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    for pattern in [r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"]:
        m = re.search(pattern, out)
        if m:
            errors += sum(int(g) for g in m.groups())
    return {"qps": qps, "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "errors": errors}


def tree_peak_rss_mb(pid):
    total = 0
    for p in [pid] + [int(c) for c in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def stage_means(port):
    """Mean time per query stage from our /metrics histograms (where a request's time goes)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    sums, counts = {}, {}
    for m in re.finditer(r'clip_retrieval_query_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} ([\d.e+-]+)', text):
        (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
    return {k: round(1e3 * sums[k] / counts[k], 3) for k in sums if counts.get(k)}


def wait_ready(port, proc, timeout=300):
    body = json.dumps({"embedding_input": [0.0] * 511 + [1.0], "num_images": 1, "indice_name": "bench",
                       "modality": "image"}).encode()
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/knn-service", data=body), timeout=30)
            return
        except Exception:
            time.sleep(1)
    raise SystemExit("server not ready")


def run_server(name, cmd, port, kinds=KINDS):
    log = open(f"{work}/{name}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_ready(port, proc)
        results = {}
        for kind in kinds:
            body_file = bodies(kind)
            wrk(port, body_file, 1)  # warm-up, short: the first requests allocate and load lazily
            for c in CONCURRENCY:
                r = wrk(port, body_file, c)
                results[f"{kind}/c{c}"] = r
                print(f"{name:7s} {kind:9s} c{c:<3d} {r['qps']:8.1f} QPS  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms"
                      f"  errors {r['errors']}", flush=True)
        results["peak_rss_mb"] = tree_peak_rss_mb(proc.pid)
        if name.startswith("ours"):
            results["stage_mean_ms"] = stage_means(port)
            print(f"{name:7s} mean ms per stage over all runs:", results["stage_mean_ms"], flush=True)
        return results
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def ours_cmd(indices, cache):
    return [our_bin, "back", "--indices_paths", f"{work}/{indices}", "--port", "18761", "--host", "127.0.0.1",
            "--clip_model", f"{work}/vit-b-32", "--text_cache_size", str(cache)]


runs = {
    "ours": run_server("ours", ours_cmd("indices_ours.json", 0), 18761),
    "ours-int8": run_server("ours-int8", ours_cmd("indices_ours_int8.json", 0), 18761),
    "ours-cache": run_server("ours-cache", ours_cmd("indices_ours.json", 10000), 18761, kinds=["text"]),
}
ours = runs["ours"]
python = run_server("python", [py_python, f"{here}/py_clip_back.py", f"{work}/indices_python.json", "18762"], 18762)
print()
print("| query | conc. | ours QPS | python QPS | QPS ratio | ours p50 / p99 ms | python p50 / p99 ms | p99 ratio |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for kind in KINDS:
    for c in CONCURRENCY:
        o, p = ours[f"{kind}/c{c}"], python[f"{kind}/c{c}"]
        print(f"| {kind} | {c} | {o['qps']:.1f} | {p['qps']:.1f} | {o['qps'] / p['qps']:.1f}x | {o['p50_ms']:.1f} / "
              f"{o['p99_ms']:.1f} | {p['p50_ms']:.1f} / {p['p99_ms']:.1f} | {o['p99_ms'] / p['p99_ms']:.3f} |")
print(f"\npeak RSS: " + ", ".join(f"{n} {r['peak_rss_mb']:.0f} MB" for n, r in runs.items())
      + f", python {python['peak_rss_mb']:.0f} MB")
# The configuration of each of our runs: (precision, text cache).
configs = {"ours": ("fp32", "off"), "ours-int8": ("int8", "off"), "ours-cache": ("fp32", "on")}
for kind in KINDS:
    for c in CONCURRENCY:
        p = python[f"{kind}/c{c}"]
        for name, r in runs.items():
            if f"{kind}/c{c}" not in r or (kind == "embedding" and name != "ours"):
                continue  # an embedding query runs no model: one configuration says it
            o = r[f"{kind}/c{c}"]
            precision, cache = configs[name]
            print(f"RESULT query={kind} concurrency={c} precision={precision} text_cache={cache} "
                  f"ours={o['qps']:.1f}/s python={p['qps']:.1f}/s ratio={o['qps'] / p['qps']:.2f}x "
                  f"ours_p99={o['p99_ms']:.1f}ms python_p99={p['p99_ms']:.1f}ms errors={o['errors']}+{p['errors']}")
json.dump({**runs, "python": python}, open(f"{work}/back_bench.json", "w"), indent=1)
