#!/usr/bin/env bash
# Creates (or reuses) the project's virtualenv with every extra installed, and links it as .venv.
#
# The venv lives outside the clone, under $RLJOB_CACHE (default ~/.cache/rljob), keyed by a hash of
# pyproject.toml: CI clones afresh every run, and reinstalling torch + ray each time would cost minutes.
# The project itself is installed editable on every call (cheap), so the venv always runs this clone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${RLJOB_CACHE:-$HOME/.cache/rljob}
py=${PYTHON:-python3}
key=$( { "$py" --version; sed -n '/^dependencies/,/^\[tool/p' "$root/pyproject.toml"; } | sha256sum | cut -c1-12)
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "python-env: creating $venv (first run downloads torch and ray: several minutes)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # pip's own download cache (~/.cache/pip) makes a rebuild after a pyproject change cheap.
  "$venv/bin/python" -m pip install -q "$root[operator,trainer,dev]"
  touch "$venv/.complete"
else
  echo "python-env: reusing $venv"
fi
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" 2>/dev/null \
  || "$venv/bin/python" -m pip install -q --no-deps -e "$root"
ln -sfn "$venv" "$root/.venv"
echo "python-env: ready ($root/.venv -> $venv)"
