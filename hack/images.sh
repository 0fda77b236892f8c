#!/usr/bin/env bash
# Builds the project's container images locally, with no image registry anywhere:
#
#   rljob/base:bookworm     Debian bookworm (python3 3.11) made with debootstrap and `docker import`
#   rljob/operator:TAG      images/operator/Dockerfile   (the `operator` extra)
#   rljob/runtime:TAG-cpu   images/runtime/Dockerfile     (the `trainer` extra, VARIANT=cpu)
#
# Usage: hack/images.sh [base|operator|runtime|all|push]... (default: all)
#   env: VARIANT=cpu|cuda (runtime), TAG (default: the version in pyproject.toml, e.g. 0.1.0)
#
# To run them on a cluster, push them to your registry (after building them; `push` builds nothing):
#
#   REGISTRY=registry.example.com/team hack/images.sh push        # or: hack/images.sh all push
#
# tags rljob/operator:TAG as $REGISTRY/rljob-operator:TAG and rljob/runtime:TAG-VARIANT as
# $REGISTRY/rljob-runtime:TAG-VARIANT (one path segment each, which every registry accepts, Docker Hub included),
# pushes both with `docker push` (log in first: `docker login registry.example.com`), and prints the chart values
# that use them. PUSH="operator" or PUSH="runtime" pushes one only; DRY_RUN=1 prints the docker commands instead
# of running them (no daemon needed). A local cluster needs no registry: charts/rljob/README.md shows how to load
# the images into containerd, kind or minikube.
#
# Cached and idempotent; everything it keeps lives under ${RLJOB_CACHE:-~/.cache/rljob}:
#   base/bookworm.tar       the debootstrap root filesystem (re-imported if the image is gone)
#   wheels/py311/           every dependency as a wheel (pip downloads them once; `pip wheel` skips what is there)
#   images/context/         the build context: the rljob wheel built from this checkout + hard links to the wheels
# The Dockerfiles bind-mount the context (BuildKit) instead of copying it, so the wheels never become a layer, and
# pip runs with --no-index: a build needs no network. A rebuild with unchanged sources is a cache hit (seconds);
# a source change rebuilds only the final pip layer.
#
# Needs: a running Docker daemon (Debian's docker.io 20.10 works: its own CLI, /usr/bin/docker, drives the
# daemon's built-in BuildKit without the buildx plugin), debootstrap (for the base), python3 with pip.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${RLJOB_CACHE:-$HOME/.cache/rljob}"
# The package version: the operator's default runtime image is rljob/runtime:<version>-cpu
# (rljob.api.constants.DEFAULT_IMAGE).
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)}
VARIANT=${VARIANT:-cpu}
SUITE=bookworm
BASE_IMAGE=rljob/base:$SUITE
PYTAG=py311 # bookworm's python3 is 3.11: the wheels must match it
WHEELS="$CACHE/wheels/$PYTAG"
CTX="$CACHE/images/context"
NICE=${NICE:-nice -n 10}

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

# The Docker CLI that can drive BuildKit: a newer client without the buildx plugin refuses DOCKER_BUILDKIT=1,
# Debian's 20.10 client (/usr/bin/docker) has BuildKit built in.
pick_docker() {
  if [[ -n ${DOCKER:-} ]]; then echo "$DOCKER"; return; fi
  local d version
  # shellcheck disable=SC2086 # a space-separated list of paths (tests set it)
  for d in ${DOCKER_CANDIDATES:-/usr/bin/docker $(command -v docker || true)}; do
    [[ -x $d ]] || continue
    "$d" buildx version >/dev/null 2>&1 && { echo "$d"; return; }
    # `docker version` exits 1 when no daemon is running yet (it is started later), though it printed the client's
    # version: read the output, not the status (under pipefail a pipe into grep would fail here).
    version=$("$d" version --format '{{.Client.Version}}' 2>/dev/null || true)
    [[ $version == 20.* ]] && { echo "$d"; return; }
  done
  die "no Docker CLI with BuildKit: install Debian's docker.io (apt-get install docker.io) or the buildx plugin"
}

ensure_daemon() {
  if "$DOCKER_BIN" info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || die "no Docker daemon reachable and dockerd is not installed (apt-get install docker.io)"
  log "starting dockerd (log: /var/log/rljob-dockerd.log)"
  setsid dockerd >/var/log/rljob-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do "$DOCKER_BIN" info >/dev/null 2>&1 && return; sleep 1; done
  die "dockerd did not come up; see /var/log/rljob-dockerd.log"
}

# The Debian mirror this machine's apt already uses (never hard-coded here).
debian_mirror() {
  local m=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    m=$(awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources | grep -v -- '-security' | grep '/debian/\?$' | head -n1 || true)
  fi
  if [[ -z $m && -f /etc/apt/sources.list ]]; then
    m=$(awk '$1=="deb" {print $2}' /etc/apt/sources.list | grep '/debian/\?$' | head -n1 || true)
  fi
  [[ -n $m ]] || die "cannot find a Debian mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR"
  echo "$m"
}

build_base() {
  if "$DOCKER_BIN" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base: $BASE_IMAGE present"
    return
  fi
  local tarball="$CACHE/base/$SUITE.tar"
  if [[ ! -s $tarball ]]; then
    command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
    local mirror=${DEBIAN_MIRROR:-$(debian_mirror)} rootfs start
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/rljob-rootfs.XXXXXX")
    start=$(date +%s)
    log "base: debootstrap $SUITE (minbase + python3) ..."
    # python3-venv for the image's venv; ca-certificates for HTTPS clients; libgomp1/libglib2.0-0 are loaded by
    # torch's wheels on some paths; procps (ps) is used by Ray's process monitoring.
    $NICE debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1,procps,tzdata \
      "$SUITE" "$rootfs" "$mirror" >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    mkdir -p "$CACHE/base"
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    log "base: rootfs built in $(($(date +%s) - start))s"
  fi
  "$DOCKER_BIN" import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    -m "debootstrap $SUITE minbase + python3 (hack/images.sh)" \
    "$tarball" "$BASE_IMAGE" >/dev/null
  log "base: imported $BASE_IMAGE ($("$DOCKER_BIN" image inspect -f '{{.Id}}' "$BASE_IMAGE"))"
}

# Every dependency of both extras as a wheel, once. `pip wheel` re-resolves against what is already there.
fetch_wheels() {
  mkdir -p "$WHEELS"
  local stamp="$WHEELS/.requirements" want
  want=$(sed -n '/^dependencies/,/^\[tool/p' "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "wheels: up to date in $WHEELS"
    return
  fi
  local py=${PYTHON:-python3} start
  [[ -z ${PYTHON:-} && -x $ROOT/.venv/bin/python ]] && py=$ROOT/.venv/bin/python
  start=$(date +%s)
  log "wheels: downloading the operator and trainer dependencies into $WHEELS (first time: ~3 GB) ..."
  # Wheels for bookworm's CPython 3.11 whatever python runs pip; only binary wheels (no sdists).
  local reqs
  mapfile -t reqs < <(cd "$ROOT" && "$py" -c '
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = p["optional-dependencies"]
print("\n".join([*p["dependencies"], *extras["operator"], *extras["trainer"]]))')
  # bookworm's glibc is 2.36: every manylinux tag up to it (pip does not expand --platform by itself).
  local plats=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64) v
  for v in $(seq 5 36); do plats+=(--platform "manylinux_2_${v}_x86_64"); done
  local try
  for try in 1 2 3; do # the index sometimes answers "from versions: none" for a moment
    if $NICE "$py" -m pip download -q --dest "$WHEELS" --only-binary=:all: \
      --python-version 3.11 --implementation cp "${plats[@]}" "${reqs[@]}" >&2; then
      break
    fi
    ((try < 3)) || die "downloading the wheels failed"
    sleep 5
  done
  echo "$want" >"$stamp"
  log "wheels: fetched in $(($(date +%s) - start))s"
}

# The build context: this checkout's rljob wheel + hard links to the cached wheels.
make_context() {
  [[ -z ${CONTEXT_READY:-} ]] || return 0
  # dist/ is kept between runs: an unchanged wheel keeps its file (and mtime), so the image's last layer stays
  # cached and the image id stays the same (the e2e node then skips re-importing it).
  rm -rf "$CTX/wheels" "$CTX/requirements"
  mkdir -p "$CTX/wheels" "$CTX/dist"
  cp -al "$WHEELS"/*.whl "$CTX/wheels/" 2>/dev/null || cp "$WHEELS"/*.whl "$CTX/wheels/"
  rm -f "$CTX"/wheels/rljob-*.whl
  # Each extra's pins (plus the base dependencies) as a requirements file: the images' dependency layer depends
  # on these files only, not on the rljob wheel, so a source change does not reinstall torch.
  mkdir -p "$CTX/requirements"
  local py=${PYTHON:-python3}
  [[ -z ${PYTHON:-} && -x $ROOT/.venv/bin/python ]] && py=$ROOT/.venv/bin/python
  "$py" - "$ROOT/pyproject.toml" "$CTX/requirements" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for extra, pins in project["optional-dependencies"].items():
    with open(f"{sys.argv[2]}/{extra}.txt", "w") as f:
        f.write("\n".join([*project["dependencies"], *pins]) + "\n")
PYEOF
  touch -d @0 "$CTX"/requirements/*.txt # BuildKit's cache key includes mtimes
  local src out
  src=$(mktemp -d "${TMPDIR:-/tmp}/rljob-src.XXXXXX")
  out=$(mktemp -d "${TMPDIR:-/tmp}/rljob-dist.XXXXXX")
  (cd "$ROOT" && tar --exclude='__pycache__' --exclude='*.egg-info' -cf - pyproject.toml README.md operator) | tar -C "$src" -xf -
  # A reproducible wheel: fixed timestamps inside the zip.
  SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$src" >&2 2>/dev/null \
    || SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel -q --no-deps -w "$out" "$src" >&2
  local built
  built=$(ls "$out"/rljob-*.whl 2>/dev/null | head -n1)
  [[ -n $built ]] || die "building the rljob wheel failed"
  if ! cmp -s "$built" "$CTX/dist/$(basename "$built")"; then
    rm -f "$CTX"/dist/rljob-*.whl
    mv "$built" "$CTX/dist/"
  fi
  rm -rf "$src" "$out"
  CONTEXT_READY=1
}

build_image() { # build_image DOCKERFILE TAG [build args...]
  local dockerfile=$1 tag=$2 start
  shift 2
  start=$(date +%s)
  log "build $tag ($dockerfile) ..."
  DOCKER_BUILDKIT=1 $NICE "$DOCKER_BIN" build --progress=plain -f "$ROOT/$dockerfile" -t "$tag" \
    --build-arg "BASE=$BASE_IMAGE" "$@" "$CTX" >&2
  log "built $tag in $(($(date +%s) - start))s ($("$DOCKER_BIN" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}'))"
}

# The docker commands of `push`, or with DRY_RUN=1 just their text on stdout.
docker_cmd() {
  if [[ -n ${DRY_RUN:-} ]]; then
    echo "docker $*"
  else
    "$DOCKER_BIN" "$@"
  fi
}

# The registry repository of a local image: rljob/operator:0.1.0 -> $REGISTRY/rljob-operator:0.1.0.
registry_ref() {
  local repo=${1%%:*} tag=${1#*:}
  echo "$REGISTRY/${repo//\//-}:$tag"
}

push_images() {
  REGISTRY=${REGISTRY%/}
  [[ -n $REGISTRY ]] || die "push: set REGISTRY, e.g. REGISTRY=registry.example.com/team hack/images.sh push"
  # host[:port][/path...], lowercase (an image reference's repository part is lowercase; no scheme).
  [[ $REGISTRY =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]] \
    || die "push: REGISTRY=$REGISTRY is not a registry host with an optional path (lowercase, no scheme), e.g. registry.example.com/team"
  local refs=() which ref target
  for which in ${PUSH:-operator runtime}; do
    case $which in
      operator) refs+=("rljob/operator:$TAG") ;;
      runtime) refs+=("rljob/runtime:$TAG-$VARIANT") ;;
      *) die "push: PUSH names '$which' (operator, runtime)" ;;
    esac
  done
  for ref in "${refs[@]}"; do
    if [[ -z ${DRY_RUN:-} ]] && ! "$DOCKER_BIN" image inspect "$ref" >/dev/null 2>&1; then
      die "push: $ref is not built here (hack/images.sh ${ref#rljob/}; then push)"
    fi
  done
  for ref in "${refs[@]}"; do
    target=$(registry_ref "$ref")
    log "push $ref as $target"
    docker_cmd tag "$ref" "$target"
    docker_cmd push "$target"
  done
  log "${DRY_RUN:+(dry run) }install the chart with them:"
  local set_args=""
  for ref in "${refs[@]}"; do
    case $ref in
      rljob/operator:*) set_args+=" --set image.repository=$REGISTRY/rljob-operator --set image.tag=$TAG" ;;
      rljob/runtime:*) set_args+=" --set jobDefaults.image=$(registry_ref "$ref")" ;;
    esac
  done
  log "  helm install rljob charts/rljob -n rljob-system --create-namespace$set_args"
}

main() {
  local what=("$@") built=""
  ((${#what[@]})) || what=(all)
  if [[ -n ${DRY_RUN:-} ]]; then
    [[ ${what[*]} == push ]] || die "DRY_RUN=1 is for 'push' alone (builds are cached: just run them)"
    DOCKER_BIN=docker
  else
    DOCKER_BIN=$(pick_docker)
    ensure_daemon
  fi
  local t0
  t0=$(date +%s)
  for w in "${what[@]}"; do
    [[ $w == push ]] || built=1
    case $w in
      push) push_images ;;
      base) build_base ;;
      operator | runtime | all)
        build_base
        fetch_wheels
        make_context
        if [[ $w == operator || $w == all ]]; then
          build_image images/operator/Dockerfile "rljob/operator:$TAG"
        fi
        if [[ $w == runtime || $w == all ]]; then
          build_image images/runtime/Dockerfile "rljob/runtime:$TAG-$VARIANT" --build-arg "VARIANT=$VARIANT"
        fi
        ;;
      *) die "unknown target '$w' (base, operator, runtime, all, push)" ;;
    esac
  done
  [[ -n $built ]] || return 0
  # Superseded builds of our tags (dangling); their big layers are shared with the current ones.
  "$DOCKER_BIN" image prune -f --filter "label!=rljob.keep" >/dev/null 2>&1 || true
  # BuildKit's cache keeps every superseded ~6.5 GB dependency layer; keep the most recently used ones only.
  DOCKER_BUILDKIT=1 "$DOCKER_BIN" builder prune -f --keep-storage "${BUILD_CACHE_KEEP:-10GB}" >/dev/null 2>&1 || true
  log "done in $(($(date +%s) - t0))s"
}

# Sourcing defines the functions only (tests/unit/test_images.py calls pick_docker).
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
