"""What `hack/images.sh` builds the images FROM: one setting, IMAGE_BASE, and the docker commands each choice runs.

IMAGE_BASE=public builds FROM a public Python image with `docker buildx` (this host's platform into the local daemon,
or linux/amd64 + linux/arm64 pushed as one multi-arch image); IMAGE_BASE=debootstrap is the offline build the
end-to-end tests use; auto picks public where a registry serves the base. The script runs for real, with DRY_RUN=1
(it prints the commands) or with a stand-in `docker` that records its calls. No image is built.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

from rljob.api import constants as c
from tests.tooling import IMAGES_SCRIPT, IMAGES_SETTINGS, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PYPROJECT["version"]
PYTHON_IMAGE = "docker.io/library/python:3.11-slim-bookworm"


def images_sh(*args: str, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in IMAGES_SETTINGS}
    return subprocess.run(["bash", str(IMAGES_SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**base, "RLJOB_CACHE": str(cache), **env})


def commands(res: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert res.returncode == 0, res.stderr
    return [shlex.split(line) for line in res.stdout.splitlines()]


def flag_values(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, word in enumerate(cmd[:-1]) if word == flag]


def build_args(cmd: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in flag_values(cmd, "--build-arg"))


def test_requirements_are_pyprojects_pins(tmp_path: Path) -> None:
    # The build's requirements files come from pyproject.toml by awk, so that the host needs no Python 3.11 (tomllib).
    extras = PYPROJECT["optional-dependencies"]
    for names in (["operator"], ["trainer"], ["operator", "trainer"], list(extras), []):
        script = f"source {shlex.quote(str(IMAGES_SCRIPT))}; requirements {' '.join(names)}"
        res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
        assert res.stdout.splitlines() == [*PYPROJECT["dependencies"], *(r for n in names for r in extras[n])], names


def test_the_offline_build(tmp_path: Path) -> None:
    operator, runtime = commands(images_sh(cache=tmp_path, DRY_RUN="1", IMAGE_BASE="debootstrap"))
    for cmd, name, tag in ((operator, "operator", VERSION), (runtime, "runtime", f"{VERSION}-cpu")):
        # The daemon's own BuildKit (Debian's docker 20.10 client), no buildx, one platform, the wheel cache's context.
        assert cmd[:2] == ["docker", "build"] and "--platform" not in cmd
        assert flag_values(cmd, "-f") == [str(ROOT / "images" / name / "Dockerfile")]
        assert flag_values(cmd, "-t") == [f"rljob/{name}:{tag}", f"ghcr.io/rljob/{name}:{tag}"]
        assert build_args(cmd) | {"VARIANT": "cpu"} == {"BASE": "rljob/base:bookworm", "DEPS": "wheels", "VARIANT": "cpu"}
        assert cmd[-1] == str(tmp_path / "images" / "context")


def test_the_public_base_builds_this_hosts_platform_into_the_daemon(tmp_path: Path) -> None:
    operator, runtime = commands(images_sh(cache=tmp_path, DRY_RUN="1", IMAGE_BASE="public"))
    for cmd, name, tag in ((operator, "operator", VERSION), (runtime, "runtime", f"{VERSION}-cpu")):
        assert cmd[:3] == ["docker", "buildx", "build"] and "--load" in cmd and "--push" not in cmd
        assert "--platform" not in cmd and "--builder" not in cmd  # the default builder, the host's platform
        assert flag_values(cmd, "-t") == [f"rljob/{name}:{tag}", f"ghcr.io/rljob/{name}:{tag}"]
        assert build_args(cmd) | {"VARIANT": "cpu"} == {"BASE": PYTHON_IMAGE, "DEPS": "index", "VARIANT": "cpu"}
        assert cmd[-1] == str(tmp_path / "images" / "context-index")
    # One platform other than the host's may be loaded; several only pushed.
    (arm,) = commands(images_sh("operator", cache=tmp_path, DRY_RUN="1", IMAGE_BASE="public", PLATFORMS="linux/arm64"))
    assert flag_values(arm, "--platform") == ["linux/arm64"]
    res = images_sh(cache=tmp_path, DRY_RUN="1", IMAGE_BASE="public", PLATFORMS="linux/amd64,linux/arm64")
    assert res.returncode != 0 and "PUSH=1 pushes several as one multi-arch image" in res.stderr and res.stdout == ""


def test_the_public_base_pushes_both_architectures_as_one_image(tmp_path: Path) -> None:
    res = images_sh(cache=tmp_path, DRY_RUN="1", IMAGE_BASE="public", REGISTRY="ghcr.io/you", PUSH="1", VARIANT="cuda",
                    PYTHON_IMAGE="mirror.example.com/library/python:3.11-slim-bookworm")
    operator, runtime = commands(res)
    for cmd, name, tag in ((operator, "operator", VERSION), (runtime, "runtime", f"{VERSION}-cuda")):
        assert cmd[:3] == ["docker", "buildx", "build"] and "--push" in cmd and "--load" not in cmd
        assert flag_values(cmd, "--platform") == ["linux/amd64,linux/arm64"]
        assert flag_values(cmd, "--builder") == ["rljob-multiarch"]  # the docker driver cannot push a manifest list
        assert flag_values(cmd, "-t") == [f"ghcr.io/you/{name}:{tag}"]
        assert build_args(cmd)["BASE"] == "mirror.example.com/library/python:3.11-slim-bookworm"
        assert build_args(cmd)["DEPS"] == "index"
    assert build_args(runtime)["VARIANT"] == "cuda"
    # Nothing is tagged and pushed afterwards: buildx pushed what it built.
    assert not [cmd for cmd in (operator, runtime) if cmd[1] in ("tag", "push")]
    assert "--set image.repository=ghcr.io/you/operator" in res.stderr


def test_the_base_is_one_setting(tmp_path: Path) -> None:
    """The two paths build the same Dockerfiles into the same names; IMAGE_BASE alone tells them apart."""
    runs = {base: commands(images_sh(cache=tmp_path, DRY_RUN="1", IMAGE_BASE=base)) for base in ("debootstrap", "public")}
    for offline, public in zip(runs["debootstrap"], runs["public"], strict=True):
        assert flag_values(offline, "-f") == flag_values(public, "-f")
        assert flag_values(offline, "-t") == flag_values(public, "-t")
        assert build_args(offline).get("VARIANT") == build_args(public).get("VARIANT")
    for bad in ("ubuntu", "Public"):
        res = images_sh(cache=tmp_path, DRY_RUN="1", IMAGE_BASE=bad)
        assert res.returncode != 0 and "public, debootstrap or auto" in res.stderr and res.stdout == ""
    res = images_sh(cache=tmp_path, DRY_RUN="1", IMAGE_BASE="debootstrap", PLATFORMS="linux/arm64")
    assert res.returncode != 0 and "IMAGE_BASE=debootstrap builds linux/amd64 only" in res.stderr


def probing_docker(tmp_path: Path, *, buildx: bool, reachable: bool) -> tuple[Path, Path]:
    """A `docker` client for IMAGE_BASE=auto's probe: with or without buildx, a registry that answers or not."""
    calls = tmp_path / "calls"
    docker = tmp_path / "docker"
    docker.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
case "$1 $2" in
  "buildx version") exit {0 if buildx else 1} ;;
  "buildx imagetools") exit {0 if buildx and reachable else 1} ;;
  "version --format") echo 28.2.2 ;;
esac
exit 1
""")
    docker.chmod(0o755)
    return docker, calls


@pytest.mark.parametrize(("buildx", "reachable", "chosen"), [
    (True, True, "public"), (True, False, "debootstrap"), (False, True, "debootstrap"),
])
def test_auto_builds_on_the_public_base_where_a_registry_serves_it(
    tmp_path: Path, buildx: bool, reachable: bool, chosen: str
) -> None:
    docker, calls = probing_docker(tmp_path, buildx=buildx, reachable=reachable)
    res = images_sh("operator", cache=tmp_path, DRY_RUN="1", DOCKER_CANDIDATES=str(docker))  # IMAGE_BASE unset: auto
    (cmd,) = commands(res)
    assert build_args(cmd)["BASE"] == (PYTHON_IMAGE if chosen == "public" else "rljob/base:bookworm")
    assert "IMAGE_BASE=auto: " in res.stderr
    if buildx:
        assert f"buildx imagetools inspect {PYTHON_IMAGE}" in calls.read_text().splitlines()


def recording_docker(tmp_path: Path, platforms: str) -> tuple[Path, Path]:
    """A `docker` with buildx and a daemon, whose builder `rljob-multiarch` appears once created, and which
    records every call."""
    calls = tmp_path / "calls"
    builder = tmp_path / "builder-created"
    docker = tmp_path / "docker"
    docker.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
case "$*" in
  "buildx version" | info) exit 0 ;;
  "buildx create "*) touch {builder}; exit 0 ;;
  "buildx inspect rljob-multiarch") [[ -e {builder} ]] ;;
  "buildx inspect --bootstrap rljob-multiarch") printf 'Name: rljob-multiarch\\nPlatforms: {platforms}\\n' ;;
  "buildx build "*) exit 0 ;;
  *) exit 1 ;;
esac
""")
    docker.chmod(0o755)
    return docker, calls


def test_a_multi_arch_push_prepares_its_builder_and_context(tmp_path: Path) -> None:
    docker, calls = recording_docker(tmp_path, "linux/amd64, linux/amd64/v2, linux/386, linux/arm64*, linux/arm/v7")
    cache = tmp_path / "cache"
    res = images_sh(cache=cache, DOCKER=str(docker), IMAGE_BASE="public", PUSH="1", REGISTRY="ghcr.io/you")
    assert res.returncode == 0, res.stderr
    lines = calls.read_text().splitlines()
    assert lines[:2] == ["info", "buildx inspect rljob-multiarch"]
    assert "buildx create --name rljob-multiarch --driver docker-container" in lines
    builds = [shlex.split(line) for line in lines if line.startswith("buildx build")]
    assert [flag_values(b, "-t") for b in builds] == [[f"ghcr.io/you/operator:{VERSION}"], [f"ghcr.io/you/runtime:{VERSION}-cpu"]]
    assert not [line for line in lines if line.startswith(("image", "builder", "push", "tag"))]  # nothing local
    # The context: this checkout's wheel and the requirements, no wheel cache (pip reads the index in the build).
    ctx = cache / "images" / "context-index"
    assert [p.name for p in (ctx / "dist").iterdir()] == [f"rljob-{VERSION}-py3-none-any.whl"]
    assert list((ctx / "wheels").iterdir()) == []
    extras = PYPROJECT["optional-dependencies"]
    for extra in ("operator", "trainer"):
        assert (ctx / "requirements" / f"{extra}.txt").read_text().splitlines() == [*PYPROJECT["dependencies"], *extras[extra]]
    assert not (cache / "wheels").exists() and not (cache / "base").exists()


def test_a_builder_without_arm64_is_explained(tmp_path: Path) -> None:
    docker, calls = recording_docker(tmp_path, "linux/amd64, linux/amd64/v2, linux/386")
    res = images_sh(cache=tmp_path / "cache", DOCKER=str(docker), IMAGE_BASE="public", PUSH="1")
    assert res.returncode != 0
    assert "cannot build linux/arm64" in res.stderr and "tonistiigi/binfmt" in res.stderr
    assert not [line for line in calls.read_text().splitlines() if line.startswith("buildx build")]


def test_one_registry_namespace_everywhere() -> None:
    """The default REGISTRY of pushes, the chart's default repositories and the operator's default job image."""
    values = yaml.safe_load((ROOT / "charts" / "rljob" / "values.yaml").read_text())
    assert c.IMAGE_REGISTRY == "ghcr.io/rljob"
    assert values["image"]["repository"] == f"{c.IMAGE_REGISTRY}/operator"
    assert values["jobDefaults"]["image"]["repository"] == c.RUNTIME_REPOSITORY == f"{c.IMAGE_REGISTRY}/runtime"
    for script in ("images.sh", "release.sh"):
        text = (ROOT / "hack" / script).read_text()
        assert re.search(rf"^DEFAULT_REGISTRY={re.escape(c.IMAGE_REGISTRY)}( |$)", text, re.M), script


def test_the_end_to_end_tests_build_offline() -> None:
    # They load rljob/*:VERSION built from the local base and wheel cache, whatever registry this machine reaches.
    conftest = (ROOT / "tests" / "e2e" / "conftest.py").read_text()
    assert '"IMAGE_BASE": "debootstrap"' in conftest and "env=env" in conftest
    assert 'IMAGE_BASE=debootstrap bash "$ROOT/hack/images.sh" operator runtime' in (ROOT / "hack" / "e2e-cluster.sh").read_text()
