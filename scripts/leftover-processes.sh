#!/usr/bin/env bash
# Lists the processes that tests start and must stop (the project's binaries under the Cargo target directory,
# the control plane, the S3 server, Prometheus), one "pid command" line each.
#   scripts/leftover-processes.sh            -> the list now
#   scripts/leftover-processes.sh --check F  -> waits up to 15 s for every process not listed in file F (taken before
#                                                the tests) to end; prints and kills those left, and exits 1 if any.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
list() {
  ps -eo pid=,args= | grep -E "$CARGO_TARGET_DIR/(debug|release)/|/\.cache/kube/|kube-(apiserver|controller-manager|scheduler) |etcd --name|s3s-fs|prometheus --config\.file" \
    | grep -vE "grep -E|leftover-processes|cargo (test|build|run|clippy)|rustc " || true
}
if [ "${1:-}" != "--check" ]; then list; exit 0; fi
before="$2"
for _ in $(seq 1 30); do
  left="$(list | awk 'NR==FNR {seen[$1]=1; next} !($1 in seen)' "$before" -)"
  [ -z "$left" ] && exit 0
  sleep 0.5
done
echo "processes started by the tests are still running after they finished:" >&2
echo "$left" >&2
echo "$left" | awk '{print $1}' | xargs -r kill -9 2>/dev/null || true
exit 1
