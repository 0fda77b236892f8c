"""Pushing the offline build (`IMAGE_BASE=debootstrap hack/images.sh push`): the names the local images get in a
registry, and the docker commands that put them there.

The script is run for real, with DRY_RUN=1 (it prints the docker commands) or with a stand-in `docker` that records
its arguments (the path a real push takes: the images must exist, then tag and push each). No image is built. The
public base's multi-arch pushes are in tests/unit/test_images_build.py.
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.tooling import IMAGES_SCRIPT, IMAGES_SETTINGS, ROOT


def images_sh(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in IMAGES_SETTINGS}
    env = {"IMAGE_BASE": "debootstrap", **env}
    return subprocess.run(["bash", str(IMAGES_SCRIPT), *args], capture_output=True, text=True, env={**base, **env}, timeout=60)


def test_dry_run_prints_tag_and_push_for_both_images() -> None:
    res = images_sh("push", DRY_RUN="1", REGISTRY="registry.example.com:5000/team/", TAG="1.2.3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "docker tag rljob/operator:1.2.3 registry.example.com:5000/team/operator:1.2.3",
        "docker push registry.example.com:5000/team/operator:1.2.3",
        "docker tag rljob/runtime:1.2.3-cpu registry.example.com:5000/team/runtime:1.2.3-cpu",
        "docker push registry.example.com:5000/team/runtime:1.2.3-cpu",
    ]
    # The chart values that use the pushed images.
    assert ("--set image.repository=registry.example.com:5000/team/operator --set image.tag=1.2.3 "
            "--set jobDefaults.image.repository=registry.example.com:5000/team/runtime "
            "--set jobDefaults.image.tag=1.2.3-cpu") in res.stderr


def test_default_tag_is_the_package_version_and_one_image_may_be_pushed() -> None:
    version = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version = "))
    res = images_sh("runtime", "push", DRY_RUN="1", REGISTRY="ghcr.io/org", VARIANT="cuda")
    assert res.returncode == 0, res.stderr
    build, *push = res.stdout.splitlines()
    assert build.startswith("docker build ") and f"-t ghcr.io/org/runtime:{version}-cuda" in build
    assert push == [f"docker tag rljob/runtime:{version}-cuda ghcr.io/org/runtime:{version}-cuda",
                    f"docker push ghcr.io/org/runtime:{version}-cuda"]


def test_pushes_go_to_the_projects_registry_by_default() -> None:
    res = images_sh("push", DRY_RUN="1", REGISTRY="", TAG="1.0.0", PUSH="1")
    assert res.returncode == 0, res.stderr
    assert "docker push ghcr.io/rljob/operator:1.0.0" in res.stdout.splitlines()


@pytest.mark.parametrize("registry, message", [
    ("https://registry.example.com", "no scheme"),
    ("Registry.Example.com/Team", "lowercase"),
    ("registry.example.com//team", "not a registry host"),
])
def test_bad_registries_are_refused(registry: str, message: str) -> None:
    res = images_sh("push", DRY_RUN="1", REGISTRY=registry)
    assert res.returncode != 0 and message in res.stderr and res.stdout == ""


def test_push_is_one_yes_and_the_targets_name_the_images() -> None:
    # PUSH once named the images to push; now the targets do, and PUSH=1 just says "push them".
    res = images_sh(DRY_RUN="1", PUSH="runtime")
    assert res.returncode != 0 and "PUSH=1 pushes the images the targets name" in res.stderr and res.stdout == ""


def fake_docker(tmp_path: Path, present: set[str]) -> tuple[Path, Path]:
    """A `docker` that answers `info`, knows the images in `present`, and records every call."""
    calls = tmp_path / "calls"
    docker = tmp_path / "docker"
    docker.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
case "$1 $2" in
  "image inspect") for ref in {' '.join(sorted(present))}; do [[ $3 == "$ref" ]] && exit 0; done; exit 1 ;;
esac
exit 0
""")
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return docker, calls


def test_push_tags_and_pushes_the_built_images(tmp_path: Path) -> None:
    docker, calls = fake_docker(tmp_path, {"rljob/operator:9.9.9", "rljob/runtime:9.9.9-cpu"})
    res = images_sh("push", DOCKER=str(docker), REGISTRY="registry.example.com/team", TAG="9.9.9")
    assert res.returncode == 0, res.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == "info"
    assert [line for line in lines if line.startswith(("tag", "push"))] == [
        "tag rljob/operator:9.9.9 registry.example.com/team/operator:9.9.9",
        "push registry.example.com/team/operator:9.9.9",
        "tag rljob/runtime:9.9.9-cpu registry.example.com/team/runtime:9.9.9-cpu",
        "push registry.example.com/team/runtime:9.9.9-cpu",
    ]
    assert not [line for line in lines if "prune" in line or "build" in line]  # nothing was built, nor cleaned up


def test_push_refuses_an_image_that_was_not_built(tmp_path: Path) -> None:
    docker, calls = fake_docker(tmp_path, {"rljob/operator:9.9.9"})
    res = images_sh("push", DOCKER=str(docker), REGISTRY="registry.example.com/team", TAG="9.9.9")
    assert res.returncode != 0 and "rljob/runtime:9.9.9-cpu is not built here" in res.stderr
    assert not [line for line in calls.read_text().splitlines() if line.startswith(("tag", "push"))]  # all or nothing
