"""`hack/release.sh` (`make release`), run for real on a copy of the checkout: the version checked across the four
places that hold it, the wheel and the chart package built with it, and the image builds and pushes it would run
(DRY_RUN=1: printed, not run; no Docker here).

The copy carries another version than the checkout's, so what the release produces must come from the files.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.tooling import IMAGES_SETTINGS, KUBE_VERSION, ROOT, helm_bin

VERSION = "0.2.0"
FILES = {  # where the version lives, and how each states it
    "pyproject.toml": r'^version = "[^"]*"',
    "operator/rljob/__init__.py": r'^__version__ = "[^"]*"',
    "charts/rljob/Chart.yaml version": r"^version: .*",
    "charts/rljob/Chart.yaml appVersion": r"^appVersion: .*",
}


def set_version(checkout: Path, where: str, version: str) -> None:
    path = checkout / where.split()[0]
    line = {
        "pyproject.toml": f'version = "{version}"', "operator/rljob/__init__.py": f'__version__ = "{version}"',
        "charts/rljob/Chart.yaml version": f"version: {version}", "charts/rljob/Chart.yaml appVersion": f'appVersion: "{version}"',
    }[where]  # fmt: skip
    text, n = re.subn(FILES[where], line, path.read_text(), count=1, flags=re.M)
    assert n == 1, where
    path.write_text(text)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """What the release reads, copied, at VERSION."""
    copy = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("hack/release.sh", "hack/images.sh", "pyproject.toml", "README.md"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    for name in ("operator", "charts/rljob", "images"):
        shutil.copytree(ROOT / name, copy / name, ignore=ignore)
    for where in FILES:
        set_version(copy, where, VERSION)
    return copy


def release(checkout: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in (*IMAGES_SETTINGS, "IMAGES", "VARIANTS", "DIST", "HELM")}
    home = checkout.parent / "home"
    env = {**base, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data"), "RLJOB_CACHE": str(home / "rljob"), "HELM": helm_bin(),
           "PYTHON": sys.executable, **env}  # fmt: skip
    return subprocess.run(["bash", str(checkout / "hack" / "release.sh")], capture_output=True, text=True, env=env, timeout=300)


def chart_file(package: Path, name: str) -> str:
    with tarfile.open(package) as tar:
        member = tar.extractfile(f"rljob/{name}")
        assert member is not None
        return member.read().decode()


def test_release_builds_the_wheel_and_the_chart_of_one_version(checkout: Path) -> None:
    res = release(checkout, IMAGES="0")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""  # no image command, no push
    dist = checkout / "dist"
    assert sorted(p.name for p in dist.iterdir()) == [f"rljob-{VERSION}-py3-none-any.whl", f"rljob-{VERSION}.tgz"]
    with zipfile.ZipFile(dist / f"rljob-{VERSION}-py3-none-any.whl") as wheel:
        metadata = wheel.read(f"rljob-{VERSION}.dist-info/METADATA").decode()
        init = wheel.read("rljob/__init__.py").decode()
    assert f"\nVersion: {VERSION}\n" in metadata and f'__version__ = "{VERSION}"' in init
    chart = yaml.safe_load(chart_file(dist / f"rljob-{VERSION}.tgz", "Chart.yaml"))
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)
    values = yaml.safe_load(chart_file(dist / f"rljob-{VERSION}.tgz", "values.yaml"))
    assert values["image"]["repository"] == "ghcr.io/rljob/operator"
    assert values["jobDefaults"]["image"]["repository"] == "ghcr.io/rljob/runtime"
    assert "images: left out (IMAGES=0)" in res.stderr


def test_a_release_to_another_registry_prints_its_builds_and_pushes(checkout: Path) -> None:
    res = release(checkout, DRY_RUN="1", PUSH="1", IMAGE_BASE="public", REGISTRY="registry.example.com/team")
    assert res.returncode == 0, res.stderr
    *builds, push = [shlex.split(line) for line in res.stdout.splitlines()]
    package = checkout / "dist" / f"rljob-{VERSION}.tgz"
    assert push == ["helm", "push", str(package), "oci://registry.example.com/team"]
    # The operator once, the runtime in both variants; every one multi-arch, pushed, tagged with the version.
    tags = [[b[i + 1] for i, w in enumerate(b) if w == "-t"] for b in builds]
    assert tags == [[f"registry.example.com/team/operator:{VERSION}"], [f"registry.example.com/team/runtime:{VERSION}-cpu"],
                    [f"registry.example.com/team/runtime:{VERSION}-cuda"]]
    assert all(b[:3] == ["docker", "buildx", "build"] and "--push" in b and "linux/amd64,linux/arm64" in b for b in builds)
    # The packaged chart's defaults are the pushed images.
    out = subprocess.run([helm_bin(), "template", "rljob", str(package), "--kube-version", KUBE_VERSION],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(checkout.parent / "home")})
    assert out.returncode == 0, out.stderr
    (deployment,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"registry.example.com/team/operator:{VERSION}"
    assert f"--default-image=registry.example.com/team/runtime:{VERSION}-cpu" in container["args"]
    # The checkout's chart is left as it was.
    assert "repository: ghcr.io/rljob/operator" in (checkout / "charts/rljob/values.yaml").read_text()


@pytest.mark.parametrize("where", list(FILES))
def test_a_version_mismatch_builds_nothing(checkout: Path, where: str) -> None:
    set_version(checkout, where, "0.3.0")
    res = release(checkout, IMAGES="0")
    assert res.returncode != 0
    assert "the version is not one number" in res.stderr and "0.3.0" in res.stderr and where.split()[0] in res.stderr
    assert not (checkout / "dist").exists()
