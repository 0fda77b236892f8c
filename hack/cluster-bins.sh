#!/usr/bin/env bash
# Builds the pinned binaries of the local Kubernetes control plane used by the
# integration tests (tests/cluster/controlplane.py): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok and helm; and Kueue with its CRDs and webhook
# configurations (the integration tests run it: tests/kueue.py). Beside them, Debian's tinyproxy (a
# package's binary, unpacked, linked into the same bin dir): the HTTP proxy the tests route the
# operator's client through, as a kubeconfig's proxy-url or HTTPS_PROXY does.
#
# They go into a cache outside the clone (CI clones afresh on every run):
#   ${RLJOB_CACHE:-$HOME/.cache/rljob}/k8s/<k8s-version>/bin/
# A binary already there is skipped. The last line printed on stdout is that
# bin dir, so callers can do:  BIN=$(hack/cluster-bins.sh | tail -n1)
#
# Everything is built from source from the Go module proxy through the wrapper
# modules in hack/k8s/*/ (go.mod + go.sum pin every dependency). GOPATH,
# GOMODCACHE and GOCACHE are left at Go's defaults (~/go, ~/.cache/go-build) so
# that later runs reuse the downloaded modules and compiled packages.
#
# The pinned modules need Go >= 1.26.0 (etcd, kwok, helm) and >= 1.25 (k8s).
# If a future bump needs a newer Go than the installed one, export e.g.
#   GOTOOLCHAIN=go1.27.3
# (the module proxy serves toolchains) before running this script.
set -euo pipefail

K8S_VERSION=v1.35.4      # must match hack/k8s/kubernetes/go.mod
ETCD_VERSION=v3.6.16     # must match hack/k8s/etcd/go.mod
KWOK_VERSION=v0.8.0      # must match hack/k8s/kwok/go.mod
HELM_VERSION=v3.22.0     # must match hack/k8s/helm/go.mod
KUEUE_VERSION=v0.17.0    # must match hack/k8s/kueue/go.mod
TINYPROXY_VERSION=1.11.1-2.1+deb12u1  # Debian bookworm's; another release's is taken when this one is gone

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODS="$ROOT/hack/k8s"
CACHE="${RLJOB_CACHE:-$HOME/.cache/rljob}"
BIN="$CACHE/k8s/$K8S_VERSION/bin"
mkdir -p "$BIN"

export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

log() { echo "cluster-bins: $*"; }

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "cluster-bins: 'go' is not on PATH; install Go >= 1.26" >&2
    exit 1
  fi
}

# build_into NAME... -- runs "$@" (after --) unless every NAME already exists in
# $BIN; reports what it did and how long it took. Builds go to a temporary dir
# first so an interrupted build never leaves a half-written binary behind.
build_into() {
  local names=() missing=()
  while [[ $1 != -- ]]; do names+=("$1"); shift; done
  shift
  for n in "${names[@]}"; do [[ -x $BIN/$n ]] || missing+=("$n"); done
  if ((${#missing[@]} == 0)); then
    log "skip ${names[*]} (already in $BIN)"
    return 0
  fi
  need_go
  local tmp start
  tmp=$(mktemp -d "$BIN/.build.XXXXXX")
  start=$(date +%s)
  log "build ${names[*]} ..."
  if ! OUT="$tmp" "$@" >&2; then
    rm -rf "$tmp"
    echo "cluster-bins: building ${names[*]} failed" >&2
    return 1
  fi
  for n in "${names[@]}"; do
    [[ -x $tmp/$n ]] || { echo "cluster-bins: $n was not produced" >&2; rm -rf "$tmp"; return 1; }
    mv -f "$tmp/$n" "$BIN/$n"
  done
  rm -rf "$tmp"
  log "built ${names[*]} in $(($(date +%s) - start))s"
}

go_build() { # go_build MODULE_DIR LDFLAGS PKG...   (into $OUT)
  local dir=$1 ldflags=$2
  shift 2
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$OUT/" "$@")
}

# --- kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ---------
# One `go build` for all four so the shared packages compile once.
k8s_build() {
  local minor=${K8S_VERSION#v*.}
  minor=${minor%%.*}
  local major=${K8S_VERSION#v}
  major=${major%%.*}
  local date
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  go_build "$MODS/kubernetes" "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
}

# The wrapper module's main package is named after its last path element: etcd.
etcd_build() { go_build "$MODS/etcd" "" .; }

kwok_build() {
  go_build "$MODS/kwok" "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" sigs.k8s.io/kwok/cmd/kwok
}

# As helm's release builds do: the Kubernetes version `helm template` and `helm lint` assume without a cluster is
# the client-go version helm is built with (its major + 1), not the library default (1.20), which the chart's
# kubeVersion refuses.
helm_ldflags() {
  local v major minor
  v=$(cd "$MODS/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
  v=${v#v}
  major=$((${v%%.*} + 1))
  minor=${v#*.}
  minor=${minor%%.*}
  local ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  echo "$ld"
}

helm_build() {
  go_build "$MODS/helm" "$(helm_ldflags)" helm.sh/helm/v3/cmd/helm
}

# --- Kueue: the binary and, from the same module, its CRDs and webhook configurations -----------------------
# In a directory of its own version, so that a bump builds anew instead of reusing the old binary.
KUEUE="$CACHE/k8s/$K8S_VERSION/kueue-$KUEUE_VERSION"
kueue_build() {
  if [[ -x $KUEUE/kueue && -f $KUEUE/webhooks.yaml ]]; then
    log "skip kueue (already in $KUEUE)"
    return 0
  fi
  need_go
  local start src
  start=$(date +%s)
  log "build kueue $KUEUE_VERSION ..."
  mkdir -p "$KUEUE/crds"
  (cd "$MODS/kueue" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    -o "$KUEUE/kueue.tmp" sigs.k8s.io/kueue/cmd/kueue) >&2
  src=$(cd "$MODS/kueue" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
  cp "$src"/config/components/crd/bases/*.yaml "$KUEUE/crds/"
  cp "$src/config/components/webhook/manifests.yaml" "$KUEUE/webhooks.yaml.tmp"
  chmod -R u+w "$KUEUE"
  mv -f "$KUEUE/kueue.tmp" "$KUEUE/kueue"
  mv -f "$KUEUE/webhooks.yaml.tmp" "$KUEUE/webhooks.yaml"
  log "built kueue in $(($(date +%s) - start))s"
}

total_start=$(date +%s)
# Small ones first so a broken k8s build still leaves them usable.
build_into etcd -- etcd_build
build_into kwok -- kwok_build
# A helm built before the release flags above assumes Kubernetes 1.20: rebuilt when its flags differ.
if [[ -x $BIN/helm && "$(cat "$BIN/.helm-ldflags" 2>/dev/null)" != "$(helm_ldflags)" ]]; then
  rm -f "$BIN/helm"
fi
build_into helm -- helm_build
helm_ldflags >"$BIN/.helm-ldflags"
build_into kube-apiserver kube-controller-manager kube-scheduler kubectl -- k8s_build
kueue_build

# Debian's tinyproxy-bin: one binary that needs only libc; downloaded (apt's lists refreshed first if they do
# not know it and this runs as root) and unpacked into the cache, not installed.
tinyproxy_fetch() {
  local dir="$CACHE/debs/tinyproxy-$TINYPROXY_VERSION" tmp
  if [[ -x $dir/usr/bin/tinyproxy ]]; then
    log "skip tinyproxy (already in $dir)"
  elif ! command -v apt-get >/dev/null 2>&1; then
    # Not Debian: a tinyproxy installed some other way (brew, dnf) serves as well.
    if command -v tinyproxy >/dev/null 2>&1; then
      ln -sfn "$(command -v tinyproxy)" "$BIN/tinyproxy"
      log "tinyproxy: using $(command -v tinyproxy)"
      return 0
    fi
    echo "cluster-bins: no apt-get to fetch Debian's tinyproxy-bin; install tinyproxy (the proxy tests need it)" >&2
    exit 1
  else
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download -q "tinyproxy-bin=$TINYPROXY_VERSION" >/dev/null 2>&1); then
      if [[ $(id -u) == 0 ]]; then apt-get update -qq >/dev/null; fi
      (cd "$tmp" && apt-get download -q "tinyproxy-bin=$TINYPROXY_VERSION" >/dev/null 2>&1 || apt-get download -q tinyproxy-bin >/dev/null) \
        || { echo "cluster-bins: cannot download Debian's tinyproxy-bin (apt-get download)" >&2; rm -rf "$tmp"; exit 1; }
    fi
    dpkg -x "$tmp"/tinyproxy-bin_*.deb "$tmp/root"
    mkdir -p "$dir"
    cp -a "$tmp/root/." "$dir/"
    rm -rf "$tmp"
    log "tinyproxy $TINYPROXY_VERSION unpacked into $dir"
  fi
  ln -sfn "$dir/usr/bin/tinyproxy" "$BIN/tinyproxy"
}
tinyproxy_fetch

for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm tinyproxy; do
  [[ -x $BIN/$b ]] || { echo "cluster-bins: $BIN/$b missing" >&2; exit 1; }
done
log "done in $(($(date +%s) - total_start))s (k8s $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION, kueue $KUEUE_VERSION)"
echo "$BIN"
