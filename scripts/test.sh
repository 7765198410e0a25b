#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is needed (scripts/setup.sh), checks formatting and lints,
# then `cargo test --workspace` (unit tests, and tests/ against real ONNX Runtime, a real S3 server, numpy/pyarrow),
# then the web UI's unit tests (Vitest) and its type-checked build, which `back` serves at /.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
(cd front && npm test --silent && npm run build --silent)
