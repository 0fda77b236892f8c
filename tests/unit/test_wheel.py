"""What users get: the rljob wheel, built as hack/images.sh builds it, holds the package and nothing of the test
suite (the local control plane, kwok's stages, the tests), and the images install that wheel alone.

The test cluster lives in tests/cluster/, outside operator/: these tests keep it from drifting back in.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import zipfile
from pathlib import Path

import pytest

from rljob.cli.needs import EXTRAS
from tests.tooling import (
    IMAGES_SCRIPT,
    OPERATOR_DOCKERFILE,
    ROOT,
    RUNTIME_DOCKERFILE,
    build_wheel,
    instructions,
    sources_copied_by_images_script,
)

PACKAGE_DIR = ROOT / "operator" / "rljob"
# What the build of the test cluster would have put into the wheel if it were inside the package.
KWOK_STAGE_FILES = {p.name for p in (ROOT / "tests" / "cluster" / "kwok").glob("*.yaml")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist"))


def wheel_files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return [n for n in z.namelist() if not n.endswith("/")]


def test_images_script_builds_the_wheel_from_the_package_sources_only() -> None:
    # Neither tests/ nor anything else of the checkout reaches the wheel's build.
    assert sorted(sources_copied_by_images_script()) == ["README.md", "operator", "pyproject.toml"]


def test_wheel_holds_the_rljob_package_and_nothing_else(wheel: Path) -> None:
    names = wheel_files(wheel)
    top = {n.split("/", 1)[0] for n in names}
    dist_info = next(t for t in top if t.endswith(".dist-info"))
    assert top == {"rljob", dist_info}
    with zipfile.ZipFile(wheel) as z:
        assert z.read(f"{dist_info}/top_level.txt").decode().split() == ["rljob"]
    # Every module of the package, and only files of the package (nothing stale, nothing generated).
    packaged = {n.removeprefix("rljob/") for n in names if n.startswith("rljob/")}
    sources = {
        p.relative_to(PACKAGE_DIR).as_posix()
        for p in PACKAGE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert packaged <= sources, f"files in the wheel that are not in operator/rljob: {sorted(packaged - sources)}"
    assert {s for s in sources if s.endswith(".py")} <= packaged


def test_wheel_holds_no_test_tooling(wheel: Path) -> None:
    names = wheel_files(wheel)
    assert not [n for n in names if n.startswith(("tests/", "rljob/testing/"))]
    assert not [n for n in names if Path(n).name in KWOK_STAGE_FILES or "kwok" in n.lower()]
    # The package does not reach for the test suite either: no module imports `tests` or `rljob.testing`.
    offenders = []
    with zipfile.ZipFile(wheel) as z:
        for name in names:
            if not name.endswith(".py"):
                continue
            for node in ast.walk(ast.parse(z.read(name), filename=name)):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                offenders += [f"{name}: {m}" for m in modules if m.split(".")[0] == "tests" or m.startswith("rljob.testing")]
    assert not offenders


def test_kwok_stages_and_the_cluster_live_in_the_tests() -> None:
    assert {"node-stages.yaml", "pod-stages.yaml"} == KWOK_STAGE_FILES
    assert not (PACKAGE_DIR / "testing").exists()


@pytest.mark.parametrize("dockerfile", [OPERATOR_DOCKERFILE, RUNTIME_DOCKERFILE], ids=["operator", "runtime"])
def test_images_install_only_the_wheel(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    # Nothing of a checkout is copied into a layer: files come in through bind mounts of the build context only.
    assert not [args for word, args in steps if word in ("COPY", "ADD")]
    sources = {m for word, args in steps if word == "RUN" for m in re.findall(r"--mount=type=bind,source=([^,\s]+)", args)}
    assert sources == {"wheels", "requirements", "dist"}
    # The package itself is installed from dist/ (the wheel hack/images.sh builds), offline.
    [install] = [args for word, args in steps if word == "RUN" and re.search(r'pip install [^&]*"rljob\[', args)]
    assert "--no-index" in install and "--find-links=/dist" in install
    assert "source=dist,target=/dist" in install


def test_images_build_context_is_the_wheel_and_its_dependencies(tmp_path: Path) -> None:
    script = IMAGES_SCRIPT.read_text()
    # The context is a directory of its own, not the checkout, and no other rljob wheel sits among the
    # dependencies' wheels.
    assert re.search(r'^CTX="\$CACHE/images/context"$', script, re.M)
    assert 'rm -f "$CTX"/wheels/rljob-*.whl' in script
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE_BASE", "DOCKER", "REGISTRY", "TAG", "PUSH")}
    res = subprocess.run(["bash", str(IMAGES_SCRIPT)], capture_output=True, text=True, timeout=60,
                         env={**env, "DRY_RUN": "1", "IMAGE_BASE": "debootstrap", "RLJOB_CACHE": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    builds = [shlex.split(line) for line in res.stdout.splitlines()]
    assert len(builds) == 2 and all(b[-1] == str(tmp_path / "images" / "context") for b in builds), "docker build no longer gets $CTX"


def metadata(wheel: Path) -> tuple[dict[str | None, set[str]], str]:
    """(the distributions the wheel requires, by extra (None: the base install), its entry_points.txt)."""
    with zipfile.ZipFile(wheel) as z:
        dist_info = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        scripts = z.read(f"{dist_info}/entry_points.txt").decode()
        lines = z.read(f"{dist_info}/METADATA").decode().splitlines()
    requires: dict[str | None, set[str]] = {None: set()}
    requires |= {line.removeprefix("Provides-Extra: "): set() for line in lines if line.startswith("Provides-Extra: ")}
    for line in lines:
        if line.startswith("Requires-Dist: "):
            requirement = line.removeprefix("Requires-Dist: ")
            extra = re.search(r"""extra == ["']([^"']+)["']""", requirement)
            requires[extra.group(1) if extra else None].add(distribution(requirement))
    return requires, scripts


def distribution(requirement: str) -> str:
    """`ray[rllib]==2.60.0; extra == "trainer"` -> `ray`, normalised as pip compares names."""
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_wheel_installs_both_commands_and_the_kubernetes_client_unconditionally(wheel: Path) -> None:
    """`pip install rljob` alone: `rljob` and the `kubectl rljob` plugin, with the client; Ray and torch only in extras."""
    requires, scripts = metadata(wheel)
    assert "rljob = rljob.cli:main" in scripts and "kubectl-rljob = rljob.cli:plugin_main" in scripts
    assert requires[None] == {"pydantic", "pyyaml", "kubernetes"}
    assert "kubernetes" not in requires["operator"]
    assert {"ray", "torch"} <= requires["trainer"] and "kopf" in requires["operator"]
    assert "ray" not in requires["play"] and {"torch", "ale-py", "pillow"} <= requires["play"]


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_the_extras_the_commands_name_hold_what_they_check_for(wheel: Path, extra: str) -> None:
    """`rljob run` and `rljob play` check for modules before naming an extra: that extra installs them."""
    requires, _ = metadata(wheel)
    assert {distribution(d) for d in EXTRAS[extra].values()} <= requires[extra]


def test_every_install_hint_names_an_extra_that_exists(wheel: Path) -> None:
    named = set()
    for path in [*PACKAGE_DIR.rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        named |= set(re.findall(r"rljob\[([a-z,]+)\]", path.read_text()))
    extras = {e for group in named for e in group.split(",")}
    assert {"trainer", "play"} <= extras
    requires, _ = metadata(wheel)
    assert extras <= set(requires) - {None}
