#!/usr/bin/env bash
# What CI's first `make test` costs on a fresh machine: every cache the project's scripts fill is REMOVED first
# (~/.cache/rljob, Go's module and build caches, pip's cache, Docker's images and data), with the Debian packages
# hack/e2e-cluster.sh installs and apt's lists and downloads; then `bash .ci/run` runs on a fresh clone of this
# checkout's HEAD. Root only, and only with --remove-caches: it empties Docker and uninstalls packages.
#
#   sudo bash benchmarks/make_test_from_nothing.sh --remove-caches [LOG]
#
# Prints one figure per line: when the control plane was built, when the images were in the e2e nodes, the unit and
# integration tests' and the e2e tests' summaries with the minute they ended, and the total, with the machine named.
# LOG (default: a file under /tmp) keeps the whole run, each line prefixed by the seconds since the start.
set -euo pipefail

if [[ ${1:-} != --remove-caches ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
[[ $(id -u) == 0 ]] || { echo "make_test_from_nothing: run as root (it removes Docker's data and Debian packages)" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG=${2:-$(mktemp "${TMPDIR:-/tmp}/make-test-from-nothing.XXXXXX.log")}
CLONE=$(mktemp -d "${TMPDIR:-/tmp}/rljob-from-nothing.XXXXXX")
PACKAGES=(docker.io containerd runc containernetworking-plugins debootstrap iptables conntrack ipset)

# What a killed or finished e2e cluster left, then every cache.
bash "$ROOT/hack/e2e-cluster.sh" down >/dev/null 2>&1 || true
pkill -x dockerd || true
pkill -x containerd || true
sleep 5
{ grep " /var/lib/docker/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
find /var/lib/docker -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true
gomod=$(go env GOMODCACHE 2>/dev/null || true)
gobuild=$(go env GOCACHE 2>/dev/null || true)
rm -rf "${RLJOB_CACHE:-$HOME/.cache/rljob}" ${gomod:+"$gomod"} ${gobuild:+"$gobuild"} "$HOME/.cache/pip" \
  /var/lib/rljob-e2e /run/rljob-e2e
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "${PACKAGES[@]}" >/dev/null 2>&1 || true
apt-get clean
rm -rf /var/lib/apt/lists/*

git clone -q "$ROOT" "$CLONE"
cd "$CLONE"
start=$SECONDS
set +e
bash .ci/run 2>&1 | while IFS= read -r line; do printf '%5d %s\n' $((SECONDS - start)) "$line"; done >"$LOG"
rc=${PIPESTATUS[0]}
set -e
total=$((SECONDS - start))

minute() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 60 }'; }
at() { # the minute of the first line matching $1, and that line (its run's tag and pytest's rules dropped)
  local hit
  hit=$(grep -m1 -E "$1" "$LOG" || true)
  if [[ -z $hit ]]; then echo "(no line matches '$1')"; return; fi
  echo "$(minute "$(awk '{print $1}' <<<"$hit")") min: $(sed -E 's/^ *[0-9]+ //; s/^\[[a-z0-9+]+\] //; s/=+ ?//g; s/ +$//' <<<"$hit")"
}
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(date -u +%F)"
echo "machine: $machine"
echo "control plane built after $(at 'cluster-bins: done in')"
echo "images in the e2e nodes after $(at 'e2e-cluster: images in')"
echo "unit+integration ended after $(at '\[unit\+integration\] [0-9]+ (passed|failed|errors?)')"
echo "e2e ended after $(at '\[e2e\] =+ [0-9]+ (passed|failed|errors?)')"
echo "make test from nothing: $( ((rc == 0)) && echo passed || echo "FAILED (exit $rc)") in $(minute $total) min"
echo "log: $LOG"
exit "$rc"
