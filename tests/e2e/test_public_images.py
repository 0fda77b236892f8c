"""The images built FROM the public Python base (`IMAGE_BASE=public`, what `make images` does where a registry serves
it), then run: the operator's command, and the runtime's trainer imports.

Opt-in (RLJOB_E2E_PUBLIC_IMAGES=1): it needs docker.io and the package index from inside the build, downloads about
3 GB and takes minutes. The offline build, which this suite's node runs on, is checked by every other test here; the
choice between the two is one setting, checked without building in tests/unit/test_images_build.py.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.target import ROOT, VERSION

REGISTRY = "localhost/rljob-public-check"  # local names only: nothing is pushed


@pytest.mark.skipif(os.environ.get("RLJOB_E2E_PUBLIC_IMAGES") != "1",
                    reason="set RLJOB_E2E_PUBLIC_IMAGES=1 where docker.io and the package index are reachable")
@pytest.mark.timeout(3600)
def test_the_images_build_from_the_public_base_and_run() -> None:
    env = {**os.environ, "IMAGE_BASE": "public", "REGISTRY": REGISTRY}
    built = subprocess.run(["bash", str(ROOT / "hack" / "images.sh"), "operator", "runtime"], env=env,
                           capture_output=True, text=True, timeout=3500)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    def run(image: str, *command: str) -> str:
        done = subprocess.run(["docker", "run", "--rm", image, *command], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (image, command, done.stdout[-2000:], done.stderr[-2000:])
        return done.stdout

    assert f"rljob {VERSION}" in run(f"{REGISTRY}/operator:{VERSION}", "rljob", "--version")
    imports = "import ray, torch, ale_py, gymnasium, rljob.trainer.recipes.pong; print('IMPORTED', ray.__version__)"
    assert "IMPORTED" in run(f"{REGISTRY}/runtime:{VERSION}-cpu", "python", "-c", imports)
