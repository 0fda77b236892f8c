#!/usr/bin/env bash
# Builds the project's container images, and pushes them to a registry:
#
#   REGISTRY/operator:TAG           images/operator/Dockerfile   (the `operator` extra)
#   REGISTRY/runtime:TAG-VARIANT    images/runtime/Dockerfile    (the `trainer` extra; VARIANT=cpu|cuda)
#
# REGISTRY defaults to ghcr.io/rljob (the chart's default repositories, rljob.api.constants.DEFAULT_IMAGE), TAG to
# the version in pyproject.toml, which is the chart's appVersion. Local builds are also tagged rljob/operator:TAG
# and rljob/runtime:TAG-VARIANT, the names the end-to-end tests load into their node.
#
# Usage: hack/images.sh [base|operator|runtime|all|push]... (default: all)
#
# One setting chooses what the images are built FROM, IMAGE_BASE:
#
#   public       PYTHON_IMAGE (docker.io/library/python:3.11-slim-bookworm), with `docker buildx build`; pip installs
#                the pinned dependencies from the package index inside the build, for each platform. No root, no
#                wheel cache, any host architecture. With PUSH=1 it builds PLATFORMS (linux/amd64,linux/arm64) and
#                pushes one multi-arch image each; without, it builds this host's platform into the local daemon.
#   debootstrap  the offline build: Debian bookworm made here with debootstrap (root, the Debian mirror apt uses)
#                and `docker import`ed as rljob/base:bookworm; every dependency comes from a wheel cache, so the build
#                itself needs no network. linux/amd64 only. What the end-to-end tests build (they set it).
#   auto         (default) public when a registry answers for PYTHON_IMAGE (`docker buildx imagetools inspect`),
#                else debootstrap.
#
# Pushing (log in first: `docker login ghcr.io`):
#
#   REGISTRY=ghcr.io/you PUSH=1 hack/images.sh          # or: hack/images.sh all push; `runtime push`: that one only
#
# With IMAGE_BASE=public the build pushes (buildx --push, every platform); with debootstrap `push` tags the local
# images REGISTRY/NAME:TAG and `docker push`es them, building only what the targets name (`push` alone builds
# nothing). Then it prints the chart values that use them. DRY_RUN=1 prints the docker commands of the builds and
# pushes instead of running them (no daemon needed; the debootstrap base, the wheel cache and the build context are
# left alone). Other settings: PYTHON_IMAGE, PLATFORMS, BUILDER (the buildx builder multi-platform pushes use,
# created with the docker-container driver when missing), DOCKER (the client).
#
# The debootstrap path is cached and idempotent; everything it keeps lives under ${RLJOB_CACHE:-~/.cache/rljob}:
#   base/bookworm.tar       the debootstrap root filesystem (re-imported if the image is gone)
#   wheels/py311/           every dependency as a wheel (pip downloads them once; `pip wheel` skips what is there)
#   images/context/         the build context: the rljob wheel built from this checkout + hard links to the wheels
# The Dockerfiles bind-mount the context (BuildKit) instead of copying it, so the wheels never become a layer. A
# rebuild with unchanged sources is a cache hit (seconds); a source change rebuilds only the final pip layer. The
# public path's context (images/context-index) holds the rljob wheel and the requirements files only.
#
# Needs: bash >= 4.4, python3 >= 3.8 with pip (builds the rljob wheel; nothing else of Python runs on the host),
# a Docker daemon: for debootstrap, root (it starts dockerd when it is not running; Debian's docker.io 20.10 CLI
# drives the daemon's built-in BuildKit without the buildx plugin) and debootstrap; for public, the buildx plugin and
# a daemon this user may use (the docker group, or rootless Docker).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${RLJOB_CACHE:-$HOME/.cache/rljob}"
# The package version: the chart's appVersion and the tag of the operator's default runtime image.
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)}
VARIANT=${VARIANT:-cpu}
# Where pushes go, and the second name of local builds: REGISTRY/operator, REGISTRY/runtime.
DEFAULT_REGISTRY=ghcr.io/rljob
REGISTRY=${REGISTRY:-$DEFAULT_REGISTRY}
IMAGE_BASE=${IMAGE_BASE:-auto}
# Bookworm's Python 3.11, as the debootstrap base: the same interpreter and glibc (2.36) on both paths.
PYTHON_IMAGE=${PYTHON_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
MULTI_ARCH=linux/amd64,linux/arm64
BUILDER=${BUILDER:-rljob-multiarch}
SUITE=bookworm
BASE_IMAGE=rljob/base:$SUITE
PYTAG=py311 # bookworm's python3 is 3.11: the wheels must match it
WHEELS="$CACHE/wheels/$PYTAG"
CTX="$CACHE/images/context"
NICE=${NICE:-nice -n 10}

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

# The Docker CLI that can drive BuildKit: a newer client without the buildx plugin refuses DOCKER_BUILDKIT=1,
# Debian's 20.10 client (/usr/bin/docker) has BuildKit built in. `pick_docker buildx`: only a client with buildx.
pick_docker() {
  if [[ -n ${DOCKER:-} ]]; then echo "$DOCKER"; return; fi
  local need=${1:-} d version
  # shellcheck disable=SC2086 # a space-separated list of paths (tests set it)
  for d in ${DOCKER_CANDIDATES:-/usr/bin/docker $(command -v docker || true)}; do
    [[ -x $d ]] || continue
    "$d" buildx version >/dev/null 2>&1 && { echo "$d"; return; }
    [[ -z $need ]] || continue
    # `docker version` exits 1 when no daemon is running yet (it is started later), though it printed the client's
    # version: read the output, not the status (under pipefail a pipe into grep would fail here).
    version=$("$d" version --format '{{.Client.Version}}' 2>/dev/null || true)
    [[ $version == 20.* ]] && { echo "$d"; return; }
  done
  [[ -z $need ]] || die "no Docker CLI with the buildx plugin, which IMAGE_BASE=public builds with (install docker-buildx-plugin, or IMAGE_BASE=debootstrap)"
  die "no Docker CLI with BuildKit: install Debian's docker.io (apt-get install docker.io) or the buildx plugin"
}

# The debootstrap path runs as root: it starts the daemon if need be.
ensure_daemon() {
  if "$DOCKER_BIN" info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || die "no Docker daemon reachable and dockerd is not installed (apt-get install docker.io)"
  log "starting dockerd (log: /var/log/rljob-dockerd.log)"
  setsid dockerd >/var/log/rljob-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do "$DOCKER_BIN" info >/dev/null 2>&1 && return; sleep 1; done
  die "dockerd did not come up; see /var/log/rljob-dockerd.log"
}

# IMAGE_BASE=auto becomes public when a registry serves the public base, else debootstrap (this machine's case:
# no registry at all). The probe reads the manifest only.
resolve_base() {
  case $IMAGE_BASE in
    public | debootstrap) ;;
    auto)
      local d
      if d=$(pick_docker buildx 2>/dev/null) \
        && timeout "${PROBE_TIMEOUT:-30}" "$d" buildx imagetools inspect "$PYTHON_IMAGE" >/dev/null 2>&1; then
        IMAGE_BASE=public
        log "IMAGE_BASE=auto: $PYTHON_IMAGE is reachable, building FROM it (IMAGE_BASE=debootstrap: the offline build)"
      else
        IMAGE_BASE=debootstrap
        log "IMAGE_BASE=auto: no registry serves $PYTHON_IMAGE here (or no docker buildx): the offline debootstrap build"
      fi
      ;;
    *) die "IMAGE_BASE=$IMAGE_BASE: public, debootstrap or auto" ;;
  esac
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

# `requirements EXTRA...`: the base dependencies and each named extra's pins, read from pyproject.toml with awk
# (not tomllib: the host may run any Python 3, or none but the one that builds the wheel), one a line. Handles the
# layout pyproject.toml uses: one quoted requirement per line inside `name = [ ... ]` arrays (a `]` inside quotes,
# as in ray[rllib], is not the array's end).
requirements() {
  awk -v want=" $* " '
    /^[[:space:]]*#/ { next }
    /^\[/ { section = $0; array = ""; next }
    array == "" && section == "[project]" && /^dependencies[[:space:]]*=[[:space:]]*\[/ { array = "dependencies" }
    array == "" && section == "[project.optional-dependencies]" && /^[A-Za-z0-9_.-]+[[:space:]]*=[[:space:]]*\[/ {
      name = $0
      sub(/[[:space:]]*=.*/, "", name)
      array = index(want, " " name " ") ? name : "-"
    }
    array != "" {
      line = $0
      while (match(line, /"[^"]*"/)) {
        if (array != "-") print substr(line, RSTART + 1, RLENGTH - 2)
        line = substr(line, RSTART + RLENGTH)
      }
      if (index(line, "]")) array = ""
    }
  ' "$ROOT/pyproject.toml"
}

# The Python that builds the rljob wheel (and, offline, downloads the wheel cache): the project's venv if any.
host_python() {
  if [[ -n ${PYTHON:-} ]]; then echo "$PYTHON"; elif [[ -x $ROOT/.venv/bin/python ]]; then echo "$ROOT/.venv/bin/python"; else echo python3; fi
}

# Every dependency of both extras as a wheel, once. `pip wheel` re-resolves against what is already there. The
# stamp covers what is downloaded, those two extras' pins, so a change to another extra (dev) downloads nothing.
fetch_wheels() {
  mkdir -p "$WHEELS"
  local stamp="$WHEELS/.requirements" want
  want=$(requirements operator trainer | sha256sum | cut -c1-16)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "wheels: up to date in $WHEELS"
    return
  fi
  local py start reqs
  py=$(host_python)
  start=$(date +%s)
  log "wheels: downloading the operator and trainer dependencies into $WHEELS (first time: ~3 GB) ..."
  # Wheels for bookworm's CPython 3.11 whatever python runs pip; only binary wheels (no sdists).
  mapfile -t reqs < <(requirements operator trainer)
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

# The build context ($CTX): this checkout's rljob wheel, one requirements file per extra, and (debootstrap) hard
# links to the cached wheels; the public path's wheels/ is empty (its dependencies come from the index).
make_context() {
  # dist/ is kept between runs: an unchanged wheel keeps its file (and mtime), so the image's last layer stays
  # cached and the image id stays the same (the e2e node then skips re-importing it).
  rm -rf "$CTX/wheels"
  mkdir -p "$CTX/wheels" "$CTX/dist" "$CTX/requirements"
  if [[ $IMAGE_BASE == debootstrap ]]; then
    cp -al "$WHEELS"/*.whl "$CTX/wheels/" 2>/dev/null || cp "$WHEELS"/*.whl "$CTX/wheels/"
    rm -f "$CTX"/wheels/rljob-*.whl
  fi
  # Each extra's pins (plus the base dependencies) as a requirements file: the images' dependency layer depends
  # on these files only, not on the rljob wheel, so a source change does not reinstall torch. A file is replaced
  # only when its content changes: BuildKit's cache key includes mtimes.
  local extra
  for extra in operator trainer; do
    requirements "$extra" >"$CTX/requirements/$extra.txt.new"
    [[ -s $CTX/requirements/$extra.txt.new ]] || die "no requirements for the $extra extra in pyproject.toml"
    if cmp -s "$CTX/requirements/$extra.txt.new" "$CTX/requirements/$extra.txt"; then
      rm "$CTX/requirements/$extra.txt.new"
    else
      mv "$CTX/requirements/$extra.txt.new" "$CTX/requirements/$extra.txt"
    fi
  done
  local src out py
  py=$(host_python)
  src=$(mktemp -d "${TMPDIR:-/tmp}/rljob-src.XXXXXX")
  out=$(mktemp -d "${TMPDIR:-/tmp}/rljob-dist.XXXXXX")
  (cd "$ROOT" && tar --exclude='__pycache__' --exclude='*.egg-info' -cf - pyproject.toml README.md operator) | tar -C "$src" -xf -
  # A reproducible wheel: fixed timestamps inside the zip.
  SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$src" >&2 2>/dev/null \
    || SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel -q --no-deps -w "$out" "$src" >&2
  local wheels=("$out"/rljob-*.whl) built
  built=${wheels[0]}
  [[ -f $built ]] || die "building the rljob wheel failed"
  if ! cmp -s "$built" "$CTX/dist/$(basename "$built")"; then
    rm -f "$CTX"/dist/rljob-*.whl
    mv "$built" "$CTX/dist/"
  fi
  rm -rf "$src" "$out"
}

# A docker command of a build or a push, its output on stderr; with DRY_RUN=1 only its text, on stdout.
docker_cmd() {
  if [[ -n ${DRY_RUN:-} ]]; then
    local line=docker arg quoted
    for arg in "$@"; do # plain words as they are, anything else quoted for the shell
      if [[ $arg =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then quoted=$arg; else printf -v quoted '%q' "$arg"; fi
      line+=" $quoted"
    done
    echo "$line"
  else
    DOCKER_BUILDKIT=1 $NICE "$DOCKER_BIN" "$@" >&2
  fi
}

# The tag of an image: the operator's is the version, the runtime's the version and its variant.
image_tag() { if [[ $1 == runtime ]]; then echo "$TAG-$VARIANT"; else echo "$TAG"; fi; }

build_image() { # build_image operator|runtime
  local name=$1 tag start dockerfile
  tag=$(image_tag "$name")
  dockerfile=images/$name/Dockerfile
  local args=(-f "$ROOT/$dockerfile")
  [[ $name == runtime ]] && args+=(--build-arg "VARIANT=$VARIANT")
  start=$(date +%s)
  log "build $REGISTRY/$name:$tag ($dockerfile, IMAGE_BASE=$IMAGE_BASE${PUSH_BUILD:+, $PLATFORMS, pushed}) ..."
  if [[ $IMAGE_BASE == debootstrap ]]; then
    docker_cmd build --progress=plain "${args[@]}" -t "rljob/$name:$tag" -t "$REGISTRY/$name:$tag" \
      --build-arg "BASE=$BASE_IMAGE" --build-arg DEPS=wheels "$CTX"
  elif [[ -n ${PUSH_BUILD:-} ]]; then
    # Every platform in one build, pushed as one manifest list (the local daemon cannot hold a multi-arch image).
    docker_cmd buildx build --progress=plain --builder "$BUILDER" --platform "$PLATFORMS" --push "${args[@]}" \
      -t "$REGISTRY/$name:$tag" --build-arg "BASE=$PYTHON_IMAGE" --build-arg DEPS=index "$CTX"
  else
    [[ -z $PLATFORMS ]] || args+=(--platform "$PLATFORMS")
    docker_cmd buildx build --progress=plain --load "${args[@]}" -t "rljob/$name:$tag" -t "$REGISTRY/$name:$tag" \
      --build-arg "BASE=$PYTHON_IMAGE" --build-arg DEPS=index "$CTX"
  fi
  [[ -z ${DRY_RUN:-} ]] || return 0
  if [[ -n ${PUSH_BUILD:-} ]]; then
    log "pushed $REGISTRY/$name:$tag ($PLATFORMS) in $(($(date +%s) - start))s"
  else
    log "built $REGISTRY/$name:$tag in $(($(date +%s) - start))s ($("$DOCKER_BIN" image inspect -f '{{.Size}}' "rljob/$name:$tag" | awk '{printf "%.2f GB", $1/1e9}'))"
  fi
}

# The buildx builder of multi-platform pushes: the docker driver cannot push a manifest list, the docker-container
# driver can. Platforms other than the host's run under QEMU, which the kernel must know (binfmt_misc).
ensure_builder() {
  if ! "$DOCKER_BIN" buildx inspect "$BUILDER" >/dev/null 2>&1; then
    log "creating the buildx builder $BUILDER (docker-container driver)"
    "$DOCKER_BIN" buildx create --name "$BUILDER" --driver docker-container >/dev/null
  fi
  local supported platform want
  supported=$("$DOCKER_BIN" buildx inspect --bootstrap "$BUILDER" | sed -n 's/^Platforms:[[:space:]]*//p' | tr -d ' *')
  IFS=, read -ra want <<<"$PLATFORMS"
  for platform in "${want[@]}"; do
    [[ ,$supported, == *,$platform,* ]] || die "builder $BUILDER cannot build $platform (it can: $supported). Register QEMU" \
      "once with 'docker run --privileged --rm tonistiigi/binfmt --install all', or append a native node" \
      "(docker buildx create --append --name $BUILDER ...), or set PLATFORMS"
  done
}

# The debootstrap path's push: the local image under its registry name, then `docker push` (one platform).
push_image() { # push_image operator|runtime
  local name=$1 tag
  tag=$(image_tag "$name")
  log "push rljob/$name:$tag as $REGISTRY/$name:$tag"
  docker_cmd tag "rljob/$name:$tag" "$REGISTRY/$name:$tag"
  docker_cmd push "$REGISTRY/$name:$tag"
}

chart_hint() { # chart_hint IMAGE...: the chart values that use the pushed images
  local set_args="" name
  for name in "$@"; do
    case $name in
      operator) set_args+=" --set image.repository=$REGISTRY/operator --set image.tag=$TAG" ;;
      runtime) set_args+=" --set jobDefaults.image.repository=$REGISTRY/runtime --set jobDefaults.image.tag=$TAG-$VARIANT" ;;
    esac
  done
  log "${DRY_RUN:+(dry run) }install the chart with them:"
  log "  helm install rljob charts/rljob -n rljob-system --create-namespace$set_args"
}

main() {
  local targets=("$@") images=() want_base="" push="" w
  ((${#targets[@]})) || targets=(all)
  case ${PUSH:-} in
    "" | 0) ;;
    1) push=1 ;;
    *) die "PUSH=1 pushes the images the targets name (e.g. hack/images.sh runtime push), not PUSH=$PUSH" ;;
  esac
  for w in "${targets[@]}"; do
    case $w in
      all) images+=(operator runtime) ;;
      operator | runtime) images+=("$w") ;;
      base) want_base=1 ;;
      push) push=1 ;;
      *) die "unknown target '$w' (base, operator, runtime, all, push)" ;;
    esac
  done
  # Each image once, the operator first (it is the quick one).
  local ordered=() name
  for name in operator runtime; do [[ " ${images[*]} " != *" $name "* ]] || ordered+=("$name"); done
  local build=1
  if ((${#ordered[@]} == 0)); then
    build=""
    [[ -z $push ]] || ordered=(operator runtime)
  fi

  REGISTRY=${REGISTRY%/}
  # host[:port][/path...], lowercase (an image reference's repository part is lowercase; no scheme).
  [[ $REGISTRY != *://* ]] || die "REGISTRY=$REGISTRY: a registry host with an optional path, no scheme (e.g. ghcr.io/you)"
  [[ $REGISTRY == "${REGISTRY,,}" ]] || die "REGISTRY=$REGISTRY: image references are lowercase"
  [[ $REGISTRY =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]] \
    || die "REGISTRY=$REGISTRY is not a registry host with an optional path, e.g. ghcr.io/you"
  [[ $VARIANT == cpu || $VARIANT == cuda ]] || die "VARIANT=$VARIANT: cpu or cuda"

  resolve_base
  PUSH_BUILD=""
  if [[ $IMAGE_BASE == public ]]; then
    if [[ -n $push ]]; then
      build=1 # buildx pushes what it builds: a multi-arch image never sits in the local daemon
      PUSH_BUILD=1
      PLATFORMS=${PLATFORMS:-$MULTI_ARCH}
    else
      PLATFORMS=${PLATFORMS:-}
      [[ $PLATFORMS != *,* ]] || die "PLATFORMS=$PLATFORMS: the local daemon holds one platform of an image; PUSH=1 pushes several as one multi-arch image"
    fi
  else
    PLATFORMS=${PLATFORMS:-linux/amd64}
    [[ $PLATFORMS == linux/amd64 ]] || die "PLATFORMS=$PLATFORMS: IMAGE_BASE=debootstrap builds linux/amd64 only (its wheel cache is x86_64's); IMAGE_BASE=public builds others"
  fi

  if [[ -n ${DRY_RUN:-} ]]; then
    DOCKER_BIN=docker
  elif [[ $IMAGE_BASE == public ]]; then
    DOCKER_BIN=$(pick_docker buildx)
    "$DOCKER_BIN" info >/dev/null 2>&1 \
      || die "no Docker daemon answers $DOCKER_BIN (this user needs the docker group, or rootless Docker)"
    [[ -z $PUSH_BUILD ]] || ensure_builder
  else
    [[ -z $build || $(uname -m) == x86_64 ]] || die "IMAGE_BASE=debootstrap builds on x86_64 hosts only; IMAGE_BASE=public builds anywhere"
    DOCKER_BIN=$(pick_docker)
    ensure_daemon
  fi

  local t0
  t0=$(date +%s)
  if [[ -n $want_base ]]; then
    if [[ $IMAGE_BASE == public ]]; then
      log "base: IMAGE_BASE=public builds FROM $PYTHON_IMAGE; nothing to make"
    elif [[ -z ${DRY_RUN:-} ]]; then
      build_base
    fi
  fi
  if [[ -n $build ]]; then
    if [[ -z ${DRY_RUN:-} ]]; then
      if [[ $IMAGE_BASE == debootstrap ]]; then
        build_base
        fetch_wheels
      else
        CTX="$CACHE/images/context-index"
      fi
      make_context
    elif [[ $IMAGE_BASE == public ]]; then
      CTX="$CACHE/images/context-index"
    fi
    for name in "${ordered[@]}"; do build_image "$name"; done
  fi
  if [[ -n $push && -z $PUSH_BUILD ]]; then
    for name in "${ordered[@]}"; do
      if [[ -z ${DRY_RUN:-} ]] && ! "$DOCKER_BIN" image inspect "rljob/$name:$(image_tag "$name")" >/dev/null 2>&1; then
        die "push: rljob/$name:$(image_tag "$name") is not built here (hack/images.sh $name push)"
      fi
    done
    for name in "${ordered[@]}"; do push_image "$name"; done
  fi
  [[ -z $push ]] || chart_hint "${ordered[@]}"
  [[ -n $build && -z ${DRY_RUN:-} && -z $PUSH_BUILD ]] || return 0
  # Superseded builds of our tags (dangling); their big layers are shared with the current ones.
  "$DOCKER_BIN" image prune -f --filter "label!=rljob.keep" >/dev/null 2>&1 || true
  # BuildKit's cache keeps every superseded ~6.5 GB dependency layer; keep the most recently used ones only.
  DOCKER_BUILDKIT=1 "$DOCKER_BIN" builder prune -f --keep-storage "${BUILD_CACHE_KEEP:-10GB}" >/dev/null 2>&1 || true
  log "done in $(($(date +%s) - t0))s"
}

# Sourcing defines the functions only (tests/unit/test_images.py calls pick_docker and requirements).
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
