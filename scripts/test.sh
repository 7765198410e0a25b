#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is needed (scripts/setup.sh), checks formatting and lints,
# then `cargo test --workspace` (unit tests, and tests/ against real ONNX Runtime, a real S3 server, numpy/pyarrow).
set -euo pipefail
# CI may run with a minimal environment: make HOME and rustup's cargo available.
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"; export HOME
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Compiled dependencies are cached outside the checkout so that a fresh clone rebuilds only the project's crates.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clip-retrieval/target}"
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
