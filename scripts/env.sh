# Sourced by the other scripts: a usable environment even in a minimal CI shell (HOME, rustup's cargo on PATH),
# ROOT (the checkout) as the working directory, and Cargo's target directory cached outside the checkout so that a
# fresh clone rebuilds only the project's own crates.
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"; export HOME
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clip-retrieval/target}"
# Incremental compilation only pays off when editing; in CI and fresh clones it fills the disk with a cache per path.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
