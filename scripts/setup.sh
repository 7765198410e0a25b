#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, from package registries only:
#   - Debian packages for building (C toolchain pieces used by -sys crates);
#   - the ONNX Runtime shared library, taken from the PyPI wheel onnxruntime==1.32.0, into .cache/onnxruntime/;
#   - a Python venv (.cache/venv) with numpy, pyarrow and faiss-cpu, used by tests to read our outputs as Python users do,
#     onnx (tests write a small safety classifier), and clip-retrieval's own ClipClient (clip-retrieval --no-deps +
#     requests) that tests point at our server;
#   - cmake and OpenBLAS, with which the faiss crate builds faiss 1.12 from source (cached in the cargo target dir);
#   - s3s-fs 0.14.1 (a real S3 server, SigV4) built from crates.io, for the s3:// tests;
#   - Debian's Chromium and front/'s npm packages (vite, vitest, playwright-core) for the web UI and its browser tests;
#   - the Kubernetes control plane of the operator tests (scripts/kube-testenv.sh: etcd, Prometheus/promtool and
#     kube-apiserver/controller-manager/scheduler v1.20.2 built from Debian's source package; ~7 minutes once).
# Slow artefacts are cached outside the repository (~/.cache/clip-retrieval) and copied in when present.
# Idempotent: a second run takes seconds.
#
# `scripts/setup.sh --build-only` installs only what building the binaries needs (the container images use it);
# `--demo` that plus the web UI's npm packages (scripts/demo.sh);
# ORT_PACKAGE=onnxruntime-gpu takes the CUDA build of the ONNX Runtime library instead (the CUDA image).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
CACHE="${CLIP_RETRIEVAL_CACHE:-$HOME/.cache/clip-retrieval}"
ORT_VERSION=1.32.0
ORT_PACKAGE="${ORT_PACKAGE:-onnxruntime}"
ORT_LIB="libonnxruntime.so.$ORT_VERSION"
S3S_VERSION=0.14.1
mkdir -p "$CACHE" "$ROOT/.cache"
log() { printf '[setup] %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_ort() {
  local dest="$ROOT/.cache/onnxruntime/$ORT_LIB"
  local cached="$CACHE/$ORT_PACKAGE"
  [ -f "$dest" ] && [ "$ORT_PACKAGE" = onnxruntime ] && return
  if [ ! -f "$cached/$ORT_LIB" ]; then
    log "fetching $ORT_PACKAGE==$ORT_VERSION wheel from PyPI"
    local tmp; tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --only-binary=:all: "$ORT_PACKAGE==$ORT_VERSION" -d "$tmp"
    mkdir -p "$cached"
    python3 - "$tmp" "$cached" "$ORT_LIB" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/onnxruntime*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    # The library, and for onnxruntime-gpu its CUDA provider libraries beside it.
    for name in z.namelist():
        base = name.rsplit("/", 1)[-1]
        if "/capi/" in name and (base == sys.argv[3] or base.startswith("libonnxruntime_providers_")):
            open(sys.argv[2] + "/" + base, "wb").write(z.read(name))
PY
    rm -rf "$tmp"
  fi
  mkdir -p "$ROOT/.cache/onnxruntime"
  cp "$cached"/lib* "$ROOT/.cache/onnxruntime/"
  log "ONNX Runtime library: $dest"
}

install_venv() {
  local venv="$ROOT/.cache/venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import numpy, pyarrow, faiss" 2>/dev/null; then
    log "creating $venv (numpy, pyarrow, faiss-cpu)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q numpy pyarrow "faiss-cpu==1.12.0"
  fi
  if ! "$venv/bin/python" -c "import onnx, requests, importlib.util as u; assert u.find_spec('clip_retrieval')" 2>/dev/null; then
    log "adding onnx, requests and clip-retrieval (--no-deps, for its ClipClient) to $venv"
    "$venv/bin/pip" install -q onnx requests
    "$venv/bin/pip" install -q --no-deps "clip-retrieval==2.45.0"
  fi
}

install_s3s() {
  local bin="$CACHE/tools/bin/s3s-fs"
  if [ ! -x "$bin" ]; then
    log "building s3s-fs $S3S_VERSION from crates.io (about 3 minutes, cached in $CACHE/tools)"
    cargo install -q --locked s3s-fs --version "$S3S_VERSION" --features binary --root "$CACHE/tools"
  fi
  mkdir -p "$ROOT/.cache/bin"
  ln -sf "$bin" "$ROOT/.cache/bin/s3s-fs"
}

# The web UI's npm packages (vite, vitest, typescript), exactly as front/package-lock.json pins them. Vite 7 needs
# Node.js >= 20.19 (the machine's; Debian 12's own nodejs is 18).
install_front() {
  command -v node >/dev/null || { log "Node.js >= 20.19 is required for front/ (not found)"; exit 1; }
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
    || { log "Node.js >= 20.19 is required for front/ (found $(node --version))"; exit 1; }
  local stamp="$ROOT/front/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$ROOT/front/package-lock.json" -nt "$stamp" ]; then
    log "npm ci in front/"
    (cd "$ROOT/front" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

if [ "${1:-}" = "--demo" ]; then
  # The demo's needs only: building the binary, ONNX Runtime, and the UI's npm packages (no venv, S3 server,
  # Chromium or control plane, which only the tests use).
  log "Debian build packages (pkg-config, cmake, OpenBLAS for faiss)"
  apt_install pkg-config python3-pip cmake libopenblas-dev
  log "ONNX Runtime $ORT_VERSION (the PyPI wheel's library)"
  install_ort
  log "the web UI's npm packages"
  install_front
  log "done (demo)"
  exit 0
fi
if [ "${1:-}" = "--build-only" ]; then
  apt_install pkg-config python3-pip cmake libopenblas-dev
  install_ort
  log "done (build only)"
  exit 0
fi
apt_install pkg-config python3-venv cmake libopenblas-dev chromium
install_ort
install_venv
install_s3s
install_front
bash "$ROOT/scripts/kube-testenv.sh"
log "done"
