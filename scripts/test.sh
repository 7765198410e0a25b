#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is needed (scripts/setup.sh), checks formatting and lints,
# the web UI's unit tests and build, then `cargo test --workspace` (unit tests, and tests/ against real ONNX Runtime,
# a real S3 server, numpy/pyarrow, and Debian's Chromium for the UI); then checks that no process the tests
# started is still running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash scripts/setup.sh --build-only   # the container images' install path (docker/*.Dockerfile)
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
(cd front && npm test --silent && npm run build --silent)
before="$(mktemp)"; bash scripts/leftover-processes.sh > "$before"
cargo test --workspace
# Tests stop what they start: fail when a process they started outlives them.
bash scripts/leftover-processes.sh --check "$before"
echo "no process started by the tests outlived them"
