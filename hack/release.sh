#!/usr/bin/env bash
# One release, one command (`make release`): the version checked, then everything it ships, built from this checkout:
#
#   dist/rljob-VERSION-py3-none-any.whl      the package
#   REGISTRY/operator:VERSION                the images (hack/images.sh; every variant in VARIANTS)
#   REGISTRY/runtime:VERSION-cpu|-cuda
#   dist/rljob-VERSION.tgz                   the chart (`helm package`), its default images REGISTRY's
#
# With PUSH=1 the images are pushed (multi-arch from the public base: hack/images.sh) and the chart too, to
# oci://REGISTRY (then `helm install rljob oci://REGISTRY/rljob --version VERSION`). Log in first: `docker login`
# and `helm registry login` for REGISTRY's host.
#
# The version is one number: pyproject.toml's, operator/rljob/__init__.py's __version__, and charts/rljob/Chart.yaml's
# version and appVersion must all be it, or nothing is built (the images' tags, the operator's default job image
# and the chart's default tags all derive from it).
#
# Settings: REGISTRY (default ghcr.io/rljob), PUSH=1, VARIANTS (default "cpu cuda"), IMAGES=0 (no images at all),
# DRY_RUN=1 (the wheel and the chart package are built; the image builds and every push are printed, not run),
# IMAGE_BASE and PLATFORMS (hack/images.sh's), DIST (default dist/), HELM, PYTHON.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${RLJOB_CACHE:-$HOME/.cache/rljob}"
DIST=${DIST:-$ROOT/dist}
DEFAULT_REGISTRY=ghcr.io/rljob # as in hack/images.sh, charts/rljob/values.yaml, rljob.api.constants
REGISTRY=${REGISTRY:-$DEFAULT_REGISTRY}
REGISTRY=${REGISTRY%/}
VARIANTS=${VARIANTS:-cpu cuda}

log() { echo "release: $*" >&2; }
die() { echo "release: error: $*" >&2; exit 1; }

# The first value of a line matching `KEY<separator>VALUE` (quotes, single or double, stripped).
read_version() { # read_version FILE SED-PREFIX
  sed -n "s/^$2[[:space:]]*[\"']\{0,1\}\([^\"'[:space:]]*\)[\"']\{0,1\}[[:space:]]*\$/\1/p" "$ROOT/$1" | head -n1
}

check_versions() {
  local pyproject init chart app
  pyproject=$(read_version pyproject.toml 'version[[:space:]]*=')
  init=$(read_version operator/rljob/__init__.py '__version__[[:space:]]*=')
  chart=$(read_version charts/rljob/Chart.yaml 'version:')
  app=$(read_version charts/rljob/Chart.yaml 'appVersion:')
  local where
  for where in "pyproject.toml:$pyproject" "operator/rljob/__init__.py:$init" "charts/rljob/Chart.yaml version:$chart" \
    "charts/rljob/Chart.yaml appVersion:$app"; do
    [[ -n ${where##*:} ]] || die "no version found in ${where%:*}"
  done
  if [[ $init != "$pyproject" || $chart != "$pyproject" || $app != "$pyproject" ]]; then
    die "the version is not one number: pyproject.toml $pyproject, operator/rljob/__init__.py $init," \
      "charts/rljob/Chart.yaml version $chart and appVersion $app; make them the same, then release"
  fi
  VERSION=$pyproject
}

python_bin() {
  if [[ -n ${PYTHON:-} ]]; then echo "$PYTHON"; elif [[ -x $ROOT/.venv/bin/python ]]; then echo "$ROOT/.venv/bin/python"; else echo python3; fi
}

helm_bin() {
  if [[ -n ${HELM:-} ]]; then echo "$HELM"; return; fi
  if command -v helm >/dev/null; then command -v helm; return; fi
  # `make cluster-bins` builds one into the cache.
  local built
  built=$(printf '%s\n' "$CACHE"/k8s/*/bin/helm | sort -V | tail -n1)
  [[ -x $built ]] || die "no helm: install it, or set HELM (make cluster-bins builds one)"
  echo "$built"
}

# The wheel from a clean copy of what the package is made of (as hack/images.sh does: a build inside the checkout
# could pick up stale files from build/).
build_wheel() {
  local py src out wheel=rljob-$VERSION-py3-none-any.whl
  py=$(python_bin)
  src=$(mktemp -d "${TMPDIR:-/tmp}/rljob-release-src.XXXXXX")
  out=$(mktemp -d "${TMPDIR:-/tmp}/rljob-release-dist.XXXXXX")
  (cd "$ROOT" && tar --exclude='__pycache__' --exclude='*.egg-info' -cf - pyproject.toml README.md operator) | tar -C "$src" -xf -
  "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$src" >&2 2>/dev/null \
    || "$py" -m pip wheel -q --no-deps -w "$out" "$src" >&2 \
    || die "building the wheel failed"
  [[ -f $out/$wheel ]] || die "the wheel is not $wheel: $(ls "$out")"
  mkdir -p "$DIST"
  mv -f "$out/$wheel" "$DIST/$wheel"
  rm -rf "$src" "$out"
  log "wheel: $DIST/$wheel"
}

# The chart package. Its default images are REGISTRY's: for another registry than the default, the package is
# made from a copy whose values.yaml names REGISTRY/operator and REGISTRY/runtime.
package_chart() {
  local helm chart=$ROOT/charts/rljob tmp=""
  helm=$(helm_bin)
  if [[ $REGISTRY != "$DEFAULT_REGISTRY" ]]; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/rljob-release-chart.XXXXXX")
    cp -R "$chart" "$tmp/rljob"
    chart=$tmp/rljob
    local name
    for name in operator runtime; do
      grep -q "repository: $DEFAULT_REGISTRY/$name\$" "$chart/values.yaml" \
        || die "charts/rljob/values.yaml names no $DEFAULT_REGISTRY/$name repository to replace with $REGISTRY/$name"
      sed -i.orig "s|repository: $DEFAULT_REGISTRY/$name\$|repository: $REGISTRY/$name|" "$chart/values.yaml"
      rm -f "$chart/values.yaml.orig"
    done
  fi
  mkdir -p "$DIST"
  "$helm" lint --strict "$chart" >&2 || die "helm lint --strict failed"
  "$helm" package "$chart" --destination "$DIST" >&2 || die "helm package failed"
  [[ -z $tmp ]] || rm -rf "$tmp"
  [[ -f $DIST/rljob-$VERSION.tgz ]] || die "helm package made no $DIST/rljob-$VERSION.tgz"
  log "chart: $DIST/rljob-$VERSION.tgz (images $REGISTRY/operator:$VERSION, $REGISTRY/runtime:$VERSION-cpu)"
}

build_images() {
  local variant targets=(operator runtime)
  for variant in $VARIANTS; do
    TAG=$VERSION VARIANT=$variant REGISTRY=$REGISTRY PUSH=${PUSH:-} DRY_RUN=${DRY_RUN:-} \
      bash "$ROOT/hack/images.sh" "${targets[@]}"
    targets=(runtime) # the operator is the same for every variant
  done
}

push_chart() {
  local cmd=("$(helm_bin)" push "$DIST/rljob-$VERSION.tgz" "oci://$REGISTRY")
  if [[ -n ${DRY_RUN:-} ]]; then
    echo "helm push $DIST/rljob-$VERSION.tgz oci://$REGISTRY"
    return
  fi
  "${cmd[@]}" >&2 || die "helm push failed (logged in? helm registry login ${REGISTRY%%/*})"
  log "chart pushed: helm install rljob oci://$REGISTRY/rljob --version $VERSION -n rljob-system --create-namespace"
}

main() {
  case ${PUSH:-} in "" | 0 | 1) ;; *) die "PUSH=1 pushes; not PUSH=$PUSH" ;; esac
  case ${IMAGES:-1} in 0 | 1) ;; *) die "IMAGES=0 leaves the images out; not IMAGES=$IMAGES" ;; esac
  [[ $REGISTRY =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]] \
    || die "REGISTRY=$REGISTRY is not a registry host with an optional path, lowercase, no scheme (e.g. ghcr.io/you)"
  check_versions
  log "version $VERSION; registry $REGISTRY"
  build_wheel
  package_chart
  if [[ ${IMAGES:-1} == 1 ]]; then
    build_images
  else
    log "images: left out (IMAGES=0)"
  fi
  [[ ${PUSH:-} != 1 ]] || push_chart
  log "done${DRY_RUN:+ (dry run: nothing was pushed)}"
}

main "$@"
