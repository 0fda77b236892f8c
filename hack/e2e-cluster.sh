#!/usr/bin/env bash
# The e2e cluster: two real nodes (each containerd + runc + kubelet + kube-proxy, CNI bridge, kube-router's
# NetworkPolicy controller; CoreDNS once) joined to the project's control plane, each inside a network namespace
# of its own ("rljob-e2e", "rljob-e2e-gpu": a CPU node and a GPU pool's node) with routes between them
# (see tests/e2e/cluster.py).
#
#   hack/e2e-cluster.sh prereqs   apt-get install what is missing (docker.io, containerd, runc, CNI plugins, ...)
#   hack/e2e-cluster.sh bins      build kubelet, kube-proxy (k8s v1.36.3), kube-router (v2.1.0), CoreDNS
#                                 (trimmed), all from hack/k8s, and the pause binary into
#                                 ${RLJOB_CACHE:-~/.cache/rljob}/k8s/v1.36.3/bin (skipped when present; the tests'
#                                 cluster fixture runs this, so `make test` builds them)
#   hack/e2e-cluster.sh images    IMAGE_BASE=debootstrap hack/images.sh operator runtime (offline, cached)
#   hack/e2e-cluster.sh preload   import the images into both nodes' containerd (which then stop), so that the
#                                 cluster starts without importing them (skipped while a cluster is running)
#   hack/e2e-cluster.sh up        all of the above, then the cluster (+ the operator, installed with the Helm chart)
#                                 in the foreground until Ctrl-C
#   hack/e2e-cluster.sh check     all of the above, start the cluster, print the timings, stop
#   hack/e2e-cluster.sh down      stop whatever a killed run left behind (containers, mounts, the namespace)
#
# Idempotent and cached: binaries, the wheel cache, the images and containerd's image store (~/.cache/rljob/e2e)
# are kept between runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${RLJOB_CACHE:-$HOME/.cache/rljob}"
K8S_VERSION=v1.36.3 # must match hack/cluster-bins.sh
KUBE_ROUTER_VERSION=v2.1.0 # must match hack/k8s/go.mod
BIN="$CACHE/k8s/$K8S_VERSION/bin"
PY="$ROOT/.venv/bin/python"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)
IMAGES=("rljob/operator:$VERSION" "rljob/runtime:$VERSION-cpu")
APT_LOCK="${TMPDIR:-/tmp}/rljob-apt.lock"

log() { echo "e2e-cluster: $*" >&2; }

prereqs() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v containerd-shim-runc-v2 >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v ipset >/dev/null || missing+=(ipset)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v openssl >/dev/null || missing+=(openssl)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # One apt at a time: hack/cluster-bins.sh may be refreshing the lists beside this (make -j).
    flock "$APT_LOCK" apt-get update -qq
    flock "$APT_LOCK" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

bins() {
  bash "$ROOT/hack/cluster-bins.sh" >/dev/null
  export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
  local start ld="" pkg minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  if [[ ! -x $BIN/kubelet || ! -x $BIN/kube-proxy ]]; then
    start=$(date +%s)
    log "building kubelet, kube-proxy $K8S_VERSION ..."
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    local tmp
    tmp=$(mktemp -d "$BIN/.build.XXXXXX")
    (cd "$ROOT/hack/k8s" && nice -n 10 go build -trimpath -ldflags "-s -w $ld" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
    mv -f "$tmp/kubelet" "$tmp/kube-proxy" "$BIN/" && rm -rf "$tmp"
    log "built kubelet, kube-proxy in $(($(date +%s) - start))s"
  fi
  # kube-router: only its network policy controller runs (tests/e2e/cluster.py). A different version in the cache
  # (the binary answers --version) is rebuilt, since the cache directory is keyed by the Kubernetes version only.
  local have=""
  [[ -x $BIN/kube-router ]] && have=$("$BIN/kube-router" --version 2>&1 || true)
  if [[ $have != *" version $KUBE_ROUTER_VERSION,"* ]]; then
    start=$(date +%s)
    log "building kube-router $KUBE_ROUTER_VERSION ..."
    (cd "$ROOT/hack/k8s" && nice -n 10 go build -trimpath \
      -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
      -o "$BIN/kube-router.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
    mv -f "$BIN/kube-router.tmp" "$BIN/kube-router"
    log "built kube-router in $(($(date +%s) - start))s"
  fi
  # CoreDNS from the same module (./coredns); pause, standard library only, from a module of its own.
  local name dir
  for name in coredns pause; do
    [[ -x $BIN/$name ]] && continue
    start=$(date +%s)
    log "building $name ..."
    dir=$ROOT/hack/k8s/$name
    [[ $name == pause ]] && dir=$ROOT/hack/e2e/pause
    (cd "$dir" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$BIN/$name.tmp" .)
    mv -f "$BIN/$name.tmp" "$BIN/$name"
    log "built $name in $(($(date +%s) - start))s"
  done
}

images() {
  # The offline build (debootstrap base, wheel cache), whether or not a registry answers: what the tests load.
  IMAGE_BASE=debootstrap bash "$ROOT/hack/images.sh" operator runtime
}

down() {
  "$PY" - <<'EOF'
from tests.e2e import cluster as c
c.down()
EOF
}

cd "$ROOT"
case "${1:-up}" in
  prereqs) prereqs ;;
  bins) bins ;;
  images) images ;;
  up | check)
    prereqs
    bash "$ROOT/hack/python-env.sh" >/dev/null
    bins
    images
    args=(--operator "$VERSION")
    [[ ${1:-up} == check ]] && args+=(--check)
    exec "$PY" -m tests.e2e.cluster "${args[@]}" "${IMAGES[@]}"
    ;;
  preload) exec "$PY" -m tests.e2e.cluster --preload "${IMAGES[@]}" ;;
  down) down ;;
  *) echo "usage: $0 [prereqs|bins|images|preload|up|check|down]" >&2; exit 2 ;;
esac
