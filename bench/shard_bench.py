"""Front-over-3-shards vs one back over the merged index, side by side on one machine (from shard_bench.sh).

The single back, the three shard backs and the front over them run at once; wrk measures the single back and the
front in alternating rounds (median of 3) at concurrency 1 and 32 for DURATION seconds each with ClipClient-shaped embedding queries (num_images 40, num_result_ids 40, dedup on)
rotating through 50 held-out queries. Prints p50/p99 and QPS, the added latency, and peak RSS; writes JSON.
Usage: python shard_bench.py WORK OUR_BIN N DURATION
"""
import json, os, re, signal, subprocess, sys, time, urllib.request

import numpy as np

work, our_bin, n, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
CONCURRENCY = [1, 32]
# DEDUPLICATE=0 in the environment: queries without dedup, so the shards send no stored vectors (what they cost).
DEDUPLICATE = os.environ.get("DEDUPLICATE", "1") != "0"
LUA = """
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/knn-service", {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def bodies():
    path = f"{work}/bodies.txt"
    with open(path, "w") as f:
        for q in np.load(f"{work}/emb/queries.npy")[:50]:
            f.write(json.dumps({"embedding_input": [round(float(x), 6) for x in q], "num_images": 40,
                                "num_result_ids": 40, "indice_name": "bench", "deduplicate": DEDUPLICATE,
                                "use_safety_model": False, "use_violence_detector": False}) + "\n")
    return path


def seconds(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def wrk(port, body_file, connections, secs):
    lua = f"{work}/post.lua"
    open(lua, "w").write(LUA)
    cmd = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{secs}s", "--timeout", "60s",
           "--latency", "-s", lua, f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, env={**os.environ, "BODIES": body_file}, capture_output=True, text=True).stdout
    errors = 0
    for pattern in [r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"]:
        m = re.search(pattern, out)
        if m:
            errors += sum(int(g) for g in m.groups())
    return {"qps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": 1e3 * seconds(re.search(r"\s50%\s+(\S+)", out).group(1)),
            "p99_ms": 1e3 * seconds(re.search(r"\s99%\s+(\S+)", out).group(1)), "errors": errors}


def peak_rss_mb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def read_into_page_cache(folder):
    """Both sides are measured warm: every file of the index folder is read once before its back starts."""
    for root, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass


def start(name, entry, port):
    if "indice_folder" in entry:
        read_into_page_cache(entry["indice_folder"])
    paths = f"{work}/{name}.json"
    json.dump({"bench": entry}, open(paths, "w"))
    log = open(f"{work}/{name}.log", "w")
    proc = subprocess.Popen([our_bin, "back", "--indices_paths", paths, "--port", str(port), "--host", "127.0.0.1",
                             "--clip_model", f"{work}/model"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}: see {work}/{name}.log")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200:
                return proc
        except Exception:
            time.sleep(0.5)
    raise SystemExit(f"{name} not ready")


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


ROUNDS = 3


def one_round(name, port, body_file, c):
    r = wrk(port, body_file, c, duration)
    print(f"{name:6s} c{c:<3d} {r['qps']:8.1f} QPS  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
          f"  errors {r['errors']}", flush=True)
    return r


def median_of(runs):
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


body_file = bodies()
columns = ["url", "caption"]
# Every process is up at once (idle ones cost no CPU), so the two sides alternate round by round under the same
# machine noise; each figure is the median of ROUNDS rounds.
single_proc = start("single", {"indice_folder": f"{work}/merged-{n}", "columns_to_return": columns}, 18771)
shards = [start(f"shard-{i}", {"indice_folder": f"{work}/part-{i}", "columns_to_return": columns}, 18781 + i)
          for i in range(3)]
front_proc = start("front", {"shards": [f"http://127.0.0.1:{18781 + i}" for i in range(3)]}, 18772)
for port in (18771, 18772):
    wrk(port, body_file, 1, 3)  # warm-up
single, front = {}, {}
for c in CONCURRENCY:
    runs = {"single": [], "front": []}
    for _ in range(ROUNDS):
        runs["single"].append(one_round("single", 18771, body_file, c))
        runs["front"].append(one_round("front", 18772, body_file, c))
    single[f"c{c}"], front[f"c{c}"] = median_of(runs["single"]), median_of(runs["front"])
# Where the added time goes: one shard alone, asked what the front asks it (no dedup; stored vectors when the
# front's filters need them), with and without the metadata of its first 40 results.
shard_alone = {}
for label, num_images in [("shard alone", 40), ("shard, no metadata", 0)]:
    path = f"{work}/shard_bodies_{num_images}.txt"
    with open(body_file) as src, open(path, "w") as dst:
        for line in src:
            b = json.loads(line)
            b.update(deduplicate=False, num_images=num_images, return_vectors=DEDUPLICATE)
            dst.write(json.dumps(b) + "\n")
    shard_alone[label] = median_of([one_round(label[:6], 18781, path, 1) for _ in range(ROUNDS)])
single["peak_rss_mb"] = peak_rss_mb(single_proc.pid)
front["peak_rss_mb"] = peak_rss_mb(front_proc.pid)
front["shard_peak_rss_mb"] = [peak_rss_mb(p.pid) for p in shards]
for p in [single_proc, front_proc] + shards:
    stop(p)

print()
print(f"medians of {ROUNDS} alternating rounds of {duration} s")
print("| concurrency | single p50 / p99 ms | front over 3 shards p50 / p99 ms | added p50 / p99 ms | single QPS | front QPS | QPS ratio |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for c in CONCURRENCY:
    s, f = single[f"c{c}"], front[f"c{c}"]
    print(f"| {c} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} | "
          f"{f['p50_ms'] - s['p50_ms']:+.2f} / {f['p99_ms'] - s['p99_ms']:+.2f} | {s['qps']:.1f} | {f['qps']:.1f} | "
          f"{f['qps'] / s['qps']:.2f}x |")
for label, r in shard_alone.items():
    print(f"{label} (shard 0, c1): p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
print(f"\npeak RSS: single {single['peak_rss_mb']:.0f} MB; front {front['peak_rss_mb']:.0f} MB, shards "
      + ", ".join(f"{m:.0f}" for m in front["shard_peak_rss_mb"]) + " MB")
json.dump({"n": n, "deduplicate": DEDUPLICATE, "single": single, "front": front, "shard_alone": shard_alone}, open(f"{work}/shard_bench.json", "w"), indent=1)
