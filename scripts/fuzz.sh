#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted bytes (fuzz/: image preprocessing, the webdataset tar reader, npy headers,
# the HTTP request parser, metadata.arrow loading) with cargo-fuzz (libFuzzer + AddressSanitizer, nightly Rust).
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET (default 600)] [TARGET...]
# Starts from the committed seed corpus (fuzz/corpus/<target>); inputs that grow coverage go to
# $CLIP_RETRIEVAL_CACHE/fuzz-corpus/<target> (not committed), crashes to fuzz/artifacts/<target>/ (commit a crash,
# once fixed, into fuzz/corpus/<target>/ so `cargo test` replays it). Prints each target's executions.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
seconds="${1:-600}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(image_preprocess webdataset_tar npy_header knn_request metadata_arrow)
cache="${CLIP_RETRIEVAL_CACHE:-$HOME/.cache/clip-retrieval}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The workspace's release profile uses thin LTO; with cargo-fuzz's one codegen unit that made each target a
# 30-minute link. Fuzzing wants fast rebuilds, not the last 10% of speed.
export CARGO_PROFILE_RELEASE_LTO=false
fuzz=(cargo +nightly fuzz run --fuzz-dir fuzz --features libfuzzer --target-dir "$cache/fuzz-target" --codegen-units 16)
mkdir -p "$cache/fuzz-logs"
for t in "${targets[@]}"; do
  mkdir -p "$cache/fuzz-corpus/$t"
  log="$cache/fuzz-logs/$t.log"
  echo "fuzzing $t for ${seconds}s (log: $log)"
  # -timeout: one input taking over 10 s is a finding (a hang), as is one needing over 2 GiB.
  if ! "${fuzz[@]}" "$t" "$cache/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    echo "$t: FOUND A CRASH (see $log and fuzz/artifacts/$t/)"; tail -40 "$log"; exit 1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
  echo "$t: $runs executions in ${seconds}s, no crash ($cov, corpus $(ls "$cache/fuzz-corpus/$t" | wc -l) new inputs)"
done
