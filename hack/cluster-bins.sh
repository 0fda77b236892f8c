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
# Everything is built from source from the Go module proxy through one wrapper
# module, hack/k8s (go.mod + go.sum pin every dependency, one version of each for
# all the programs, so shared packages compile once). GOPATH,
# GOMODCACHE and GOCACHE are left at Go's defaults (~/go, ~/.cache/go-build) so
# that later runs reuse the downloaded modules and compiled packages.
#
# The pinned modules need Go >= 1.26.0.
# If a future bump needs a newer Go than the installed one, export e.g.
#   GOTOOLCHAIN=go1.27.3
# (the module proxy serves toolchains) before running this script.
set -euo pipefail

# Each must match hack/k8s/go.mod (checked below).
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4
KUEUE_VERSION=v0.17.0
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

go_build() { # go_build LDFLAGS PKG...   (into $OUT)
  local ldflags=$1
  shift
  (cd "$MODS" && go build -trimpath -ldflags "-s -w $ldflags" -o "$OUT/" "$@")
}

# The versions above are the ones the module pins (a bump edits both).
check_versions() {
  local mod want have
  for want in "k8s.io/kubernetes $K8S_VERSION" "go.etcd.io/etcd/server/v3 $ETCD_VERSION" \
    "sigs.k8s.io/kwok $KWOK_VERSION" "helm.sh/helm/v3 $HELM_VERSION" "sigs.k8s.io/kueue $KUEUE_VERSION"; do
    mod=${want% *}
    have=$(awk -v m="$mod" '$1 == m { print $1 " " $2 }' "$MODS/go.mod")
    if [[ $have != "$want" ]]; then
      echo "cluster-bins: hack/k8s/go.mod pins '${have:-no $mod}', this script '$want'" >&2
      exit 1
    fi
  done
}
check_versions

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
  go_build "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
}

# ./etcd is a main package named after its directory, so the binary is etcd.
etcd_build() { go_build "" ./etcd; }

kwok_build() {
  go_build "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" sigs.k8s.io/kwok/cmd/kwok
}

# As helm's release builds do: the Kubernetes version `helm template` and `helm lint` assume without a cluster is
# the client-go version helm is built with (its major + 1), not the library default (1.20), which the chart's
# kubeVersion refuses.
helm_ldflags() {
  local v major minor
  v=$(cd "$MODS" && go list -m -f '{{.Version}}' k8s.io/client-go)
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
  go_build "$(helm_ldflags)" helm.sh/helm/v3/cmd/helm
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
  (cd "$MODS" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    -o "$KUEUE/kueue.tmp" sigs.k8s.io/kueue/cmd/kueue) >&2
  src=$(cd "$MODS" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
  cp "$src"/config/components/crd/bases/*.yaml "$KUEUE/crds/"
  cp "$src/config/components/webhook/manifests.yaml" "$KUEUE/webhooks.yaml.tmp"
  chmod -R u+w "$KUEUE"
  mv -f "$KUEUE/kueue.tmp" "$KUEUE/kueue"
  mv -f "$KUEUE/webhooks.yaml.tmp" "$KUEUE/webhooks.yaml"
  log "built kueue in $(($(date +%s) - start))s"
}

total_start=$(date +%s)
# The largest first: the others find most of their packages compiled by it (Go's build cache).
build_into kube-apiserver kube-controller-manager kube-scheduler kubectl -- k8s_build
build_into etcd -- etcd_build
build_into kwok -- kwok_build
# A helm built before the release flags above assumes Kubernetes 1.20: rebuilt when its flags differ.
if [[ -x $BIN/helm && "$(cat "$BIN/.helm-ldflags" 2>/dev/null)" != "$(helm_ldflags)" ]]; then
  rm -f "$BIN/helm"
fi
build_into helm -- helm_build
helm_ldflags >"$BIN/.helm-ldflags"
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
      # One apt at a time: hack/e2e-cluster.sh prereqs may be installing beside this (make -j).
      if [[ $(id -u) == 0 ]]; then flock "${TMPDIR:-/tmp}/rljob-apt.lock" apt-get update -qq >/dev/null; fi
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
