"""The Dockerfiles, read statically: each installs exactly the extra it should, runs as non-root, and the
commands the operator puts in pods are entry points of the package those images install.

Building the images needs a Docker daemon (hack/images.sh, `make images`); the e2e tests run them for real.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import tomllib

import rljob
from rljob import resources
from rljob.api import constants as c
from rljob.api import parse_job
from rljob.cli import build_parser
from rljob.resources import BuildContext
from tests.builders import minimal_job
from tests.tooling import OPERATOR_DOCKERFILE, ROOT, RUNTIME_DOCKERFILE, instructions

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pip_installs(dockerfile: Path) -> tuple[list[str], list[str]]:
    """Every requirement given to `pip install` in RUN instructions, and every requirements file (``-r``)."""
    reqs: list[str] = []
    files: list[str] = []
    for word, args in instructions(dockerfile):
        if word != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", args):
            tokens = shlex.split(command)
            for i in range(len(tokens) - 1):
                if tokens[i].endswith("pip") and tokens[i + 1] == "install":
                    rest = tokens[i + 2 :]
                    for j, t in enumerate(rest):
                        if t == "-r":
                            files.append(rest[j + 1])
                        # `$from`: the dependency source's flags (see test_the_dependency_source_is_one_build_arg)
                        elif not t.startswith(("-", "$")) and (j == 0 or rest[j - 1] != "-r"):
                            reqs.append(t)
    return reqs, files


def extras_of(requirement: str) -> set[str]:
    m = re.fullmatch(r"([A-Za-z0-9_.\-/]+)(?:\[([^\]]*)\])?(.*)", requirement)
    assert m, requirement
    return {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}


def the_user(dockerfile: Path) -> str:
    users = [args for word, args in instructions(dockerfile) if word == "USER"]
    assert users, f"{dockerfile} sets no USER"
    return users[-1]


@pytest.mark.parametrize(("dockerfile", "extra"), [(OPERATOR_DOCKERFILE, "operator"), (RUNTIME_DOCKERFILE, "trainer")])
def test_each_image_installs_this_package_with_exactly_its_extra(dockerfile: Path, extra: str) -> None:
    installs, files = pip_installs(dockerfile)
    ours = [r for r in installs if re.match(r"^(rljob|/src|\.)(\[|$)", r)]
    assert len(ours) == 1, f"{dockerfile}: expected one install of the rljob package, got {installs}"
    assert extras_of(ours[0]) == {extra}
    assert extra in PYPROJECT["project"]["optional-dependencies"]
    # Nothing else is installed beside it ...
    assert installs == ours
    # ... but the dependency layer, from the requirements file hack/images.sh writes for that same extra alone
    # (tests/unit/test_images_build.py checks its content against pyproject.toml).
    assert [Path(f).name for f in files] == [f"{extra}.txt"]
    script = (ROOT / "hack" / "images.sh").read_text()
    assert 'for extra in operator trainer; do' in script and 'requirements "$extra" >"$CTX/requirements/$extra.txt.new"' in script


def dependency_sources(dockerfile: Path) -> dict[str, str]:
    """The branches of the dependency layer's `case "$DEPS"`: source name -> the pip flags it sets."""
    (run,) = [args for word, args in instructions(dockerfile) if word == "RUN" and 'case "$DEPS"' in args]
    return dict(re.findall(r'(\w+)\) from="([^"]*)"', run))


@pytest.mark.parametrize("dockerfile", [OPERATOR_DOCKERFILE, RUNTIME_DOCKERFILE], ids=["operator", "runtime"])
def test_the_dependency_source_is_one_build_arg(dockerfile: Path) -> None:
    # DEPS=wheels (the default, the offline build): only the context's wheels; DEPS=index (the public base): the
    # package index, binary wheels only, so that no dependency is compiled under QEMU for another platform.
    steps = instructions(dockerfile)
    assert ("ARG", "DEPS=wheels") in steps
    assert steps.index(("ARG", "DEPS=wheels")) > steps.index(("FROM", "${BASE}"))  # in scope of the RUNs
    assert dependency_sources(dockerfile) == {"wheels": "--no-index --find-links=/wheels", "index": "--only-binary=:all:"}
    installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    deps, package = installs
    assert "$from" in deps and "--no-index" not in deps.split('esac')[1]
    # The package itself never comes from an index: its dependencies are installed, and a package of the same name
    # on an index must not stand in for this checkout's wheel.
    assert "--no-index" in package and "$from" not in package


@pytest.mark.parametrize(("dockerfile", "uid"), [(OPERATOR_DOCKERFILE, 65532), (RUNTIME_DOCKERFILE, 1000)])
def test_images_run_as_a_fixed_non_root_user(dockerfile: Path, uid: int) -> None:
    user = the_user(dockerfile)
    assert user.split(":")[0] == str(uid), user
    assert all(part.isdigit() and int(part) != 0 for part in user.split(":")), (
        "numeric and non-zero, so that runAsNonRoot can verify it"
    )


def test_runtime_user_is_the_one_the_operator_runs_pods_as() -> None:
    from rljob.resources import pods

    assert int(the_user(RUNTIME_DOCKERFILE).split(":")[0]) == pods.RUN_AS_USER
    assert int(the_user(RUNTIME_DOCKERFILE).split(":")[1]) == pods.POD_SECURITY_CONTEXT["runAsGroup"]


def test_images_build_from_the_local_base_and_pin_the_variant() -> None:
    for dockerfile in (OPERATOR_DOCKERFILE, RUNTIME_DOCKERFILE):
        args = dict(a.split("=", 1) for w, a in instructions(dockerfile) if w == "ARG" and "=" in a)
        assert args["BASE"] == "rljob/base:bookworm"  # the default is the offline build's; hack/images.sh passes both
        assert ("FROM", "${BASE}") in instructions(dockerfile)
    runtime_args = [a for w, a in instructions(RUNTIME_DOCKERFILE) if w == "ARG"]
    assert "VARIANT=cpu" in runtime_args
    text = RUNTIME_DOCKERFILE.read_text()
    assert 'case "$VARIANT" in cpu|cuda)' in text
    # VARIANT comes after the ~6 GB dependency layer: the cpu and cuda images share it (pushed once).
    steps = instructions(RUNTIME_DOCKERFILE)
    deps = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "requirements/trainer.txt" in a)
    assert steps.index(("ARG", "VARIANT=cpu")) > deps


def test_runtime_adds_what_the_public_base_lacks_only_when_missing() -> None:
    # python:3.11-slim has no procps (Ray's process monitoring) nor libgomp1; the debootstrap base has both, and
    # must not need the network for this layer.
    (run,) = [a for w, a in instructions(RUNTIME_DOCKERFILE) if w == "RUN" and "apt-get install" in a]
    assert 'dpkg -s "$p"' in run and 'if [ -n "$missing" ]' in run
    wanted = set(re.search(r"for p in ([^;]*); do", run).group(1).split())  # type: ignore[union-attr]
    script = (ROOT / "hack" / "images.sh").read_text()
    included = set(re.search(r"--include=(\S+)", script).group(1).split(","))  # type: ignore[union-attr]
    assert {"procps", "libgomp1"} <= wanted <= included


def test_runtime_is_read_only_root_friendly() -> None:
    env = " ".join(a for w, a in instructions(RUNTIME_DOCKERFILE) if w == "ENV")
    assert f"HOME={c.CONTAINER_HOME}" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert c.TMP_MOUNT == "/tmp" and c.CONTAINER_HOME.startswith("/tmp/")


def test_operator_image_runs_the_operator() -> None:
    ins = dict(instructions(OPERATOR_DOCKERFILE))
    assert ins["ENTRYPOINT"] == '["rljob"]'
    assert ins["CMD"] == '["operator"]'


def _pod_commands() -> list[list[str]]:
    body = minimal_job(workers={"replicas": 2})
    body["metadata"]["uid"] = "uid-1"
    job = parse_job(body)
    ctx = BuildContext()
    head = resources.head_pod(job, ctx, 1, "2026-01-01T00:00:00Z")
    workers = resources.workers_statefulset(job, ctx)
    return [
        head["spec"]["containers"][0]["command"],
        workers["spec"]["template"]["spec"]["containers"][0]["command"],
    ]


def test_pod_commands_are_entry_points_of_the_installed_package() -> None:
    commands = _pod_commands()
    assert [cmd[:3] for cmd in commands] == [["rljob", "pod", "head"], ["rljob", "pod", "worker"]]
    scripts = PYPROJECT["project"]["scripts"]
    parser = build_parser()
    for cmd in commands:
        program, subcommand, role = cmd[:3]
        # The console script the wheel installs on PATH (/opt/rljob/bin in both images) ...
        assert program in scripts and scripts[program] == "rljob.cli:main"
        # ... registers the subcommand, and the subcommand accepts the role.
        try:
            args = parser.parse_args(cmd[1:])
        except SystemExit:
            pytest.fail(f"`rljob {subcommand} {role}` is not a command rljob takes")
        assert args.role == role and callable(args.func)


def test_pod_commands_live_in_the_trainer_extra_image() -> None:
    # `rljob pod` imports rljob.trainer lazily: the runtime image (trainer extra) has its dependencies, and its
    # default image is what the operator puts in pods that name none.
    version = PYPROJECT["project"]["version"]
    assert rljob.__version__ == version
    # hack/images.sh pushes the runtime as REGISTRY/runtime:<version>-cpu, REGISTRY=ghcr.io/rljob by default.
    assert f"ghcr.io/rljob/runtime:{version}-cpu" == c.DEFAULT_IMAGE
    assert f"{c.RUNTIME_REPOSITORY}:{rljob.__version__}-cpu" == c.DEFAULT_IMAGE
    text = RUNTIME_DOCKERFILE.read_text()
    assert "rljob pod --help" in text  # the build itself fails if the entry point is missing


def _fake_docker(path: Path, version: str, *, buildx: bool, daemon: bool) -> Path:
    """A stand-in `docker` client: prints its version like the real one, and exits 1 when no daemon answers."""
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = buildx ]; then {"echo buildx v0.14; exit 0" if buildx else "exit 1"}; fi\n'
        f'if [ "$1" = version ]; then echo {version}; exit {0 if daemon else 1}; fi\n'
        "exit 1\n"
    )
    path.chmod(0o755)
    return path


def _pick_docker(*candidates: Path) -> subprocess.CompletedProcess[str]:
    script = f"source {shlex.quote(str(ROOT / 'hack' / 'images.sh'))}; pick_docker"
    env = {**os.environ, "DOCKER_CANDIDATES": " ".join(str(c) for c in candidates)}
    env.pop("DOCKER", None)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("daemon", [True, False], ids=["daemon-running", "daemon-stopped"])
def test_images_script_picks_a_buildkit_capable_docker_client(tmp_path: Path, daemon: bool) -> None:
    # CI starts with dockerd stopped: Debian's 20.10 client then exits 1 after printing its version, and must
    # still be chosen over a newer client that has no buildx plugin (which refuses DOCKER_BUILDKIT=1).
    new = _fake_docker(tmp_path / "docker-28", "28.2.2", buildx=False, daemon=daemon)
    debian = _fake_docker(tmp_path / "docker-20", "20.10.24+dfsg1", buildx=False, daemon=daemon)
    res = _pick_docker(new, debian)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(debian)

    with_buildx = _fake_docker(tmp_path / "docker-buildx", "28.2.2", buildx=True, daemon=daemon)
    assert _pick_docker(with_buildx, debian).stdout.strip() == str(with_buildx)


def test_images_script_explains_a_missing_buildkit_client(tmp_path: Path) -> None:
    res = _pick_docker(_fake_docker(tmp_path / "docker-28", "28.2.2", buildx=False, daemon=False))
    assert res.returncode != 0
    assert "no Docker CLI with BuildKit" in res.stderr
