"""Run a command; report wall seconds and the peak resident memory of its whole process tree (sampled every 50 ms).

Usage: python measure.py OUT.json -- command args...   (writes {"seconds", "peak_rss_mb", "returncode"})
"""
import json, os, subprocess, sys, time


def tree_rss_kb(root):
    children = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total


def main():
    out, cmd = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    start = time.time()
    proc = subprocess.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        time.sleep(0.05)
    result = {"seconds": time.time() - start, "peak_rss_mb": peak / 1024, "returncode": proc.returncode}
    json.dump(result, open(out, "w"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
