"""What the tests of the build and the packaging share: the checkout's root, the Dockerfiles read as instructions,
the wheel built the way hack/images.sh builds it, the project's helm, and the settings hack/images.sh reads.

Test modules import these from here rather than from each other, so that running one test file never collects the
tests of another (tests/unit/test_test_layout.py keeps it so).
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IMAGES = ROOT / "images"
OPERATOR_DOCKERFILE = IMAGES / "operator" / "Dockerfile"
RUNTIME_DOCKERFILE = IMAGES / "runtime" / "Dockerfile"
IMAGES_SCRIPT = ROOT / "hack" / "images.sh"
# Every setting hack/images.sh reads from the environment: a test names the ones it wants and inherits none, so a
# developer's REGISTRY or DOCKER cannot change what it sees.
IMAGES_SETTINGS = ("REGISTRY", "TAG", "VARIANT", "PUSH", "DRY_RUN", "DOCKER", "DOCKER_CANDIDATES", "IMAGE_BASE",
                   "PLATFORMS", "PYTHON_IMAGE", "BUILDER", "PYTHON")

# `helm template` assumes the Kubernetes version helm was built against; the project's helm, built from the Go module
# proxy without release flags, assumes 1.20, which the chart's kubeVersion (>=1.30) refuses. Render for the control
# plane's version.
KUBE_VERSION = "1.36.0"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def sources_copied_by_images_script() -> list[str]:
    """The paths hack/images.sh copies out of the checkout to build the wheel from."""
    m = re.search(r"\(cd \"\$ROOT\" && tar (?P<args>[^|]*) -cf - (?P<paths>[^)]*)\)", IMAGES_SCRIPT.read_text())
    assert m, "hack/images.sh no longer builds the wheel from a tar of the checkout; update tests/tooling.py"
    return shlex.split(m.group("paths"))


def build_wheel(src: Path, out: Path) -> Path:
    """The wheel built from a clean copy (in `src`) of what hack/images.sh copies (a build in the checkout itself
    could pick up stale files from build/), offline, with the build tools of this environment; written to `out`."""
    for name in sources_copied_by_images_script():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, f"building the wheel failed:\n{res.stdout}\n{res.stderr}"
    [built] = out.glob("rljob-*.whl")
    return built


def helm_bin() -> str:
    """The project's helm (`make cluster-bins` builds it); the calling test is skipped where it is not built."""
    from tests.cluster.controlplane import MissingBinariesError, find_bin_dir

    try:
        return str(find_bin_dir(required=("helm",)) / "helm")
    except MissingBinariesError as exc:
        pytest.skip(f"helm is not built: {exc}")
