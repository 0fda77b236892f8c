"""What `pip install rljob` gives without extras: the cluster commands import nothing of the operator's or the trainer's
packages, and the commands that compute say in one line which extra to install (test_wheel.py checks that the
extra exists and installs what they look for). The installed wheel in a fresh virtualenv is tried for real in
tests/integration/operator/test_cli_install.py.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from rljob.api.models import RECIPES
from rljob.cli import PLUGIN_PROG, build_parser
from tests.tooling import ROOT

# Importable names of what the extras bring (and numpy, which only they bring): none may load for a cluster command.
NOT_IN_BASE = ("ray", "torch", "kopf", "prometheus_client", "gymnasium", "ale_py", "cv2", "PIL", "matplotlib",
               "tensorboardX", "numpy")
# The commands of the base install: everything but run and play (which compute), operator and pod (in images).
CLUSTER_COMMANDS = ("recipes", "render", "crd", "submit", "jobs", "fetch", "control", "forward", "completion")


def run_blocked(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """`rljob ARGS` in a subprocess where the `blocked` modules cannot be imported (and find_spec finds none)."""
    code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            "from rljob.cli import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "operator")}, cwd=ROOT)


def test_the_plugin_names_itself_as_kubectl_users_type_it() -> None:
    assert build_parser(PLUGIN_PROG).format_usage().startswith("usage: kubectl rljob ")
    assert build_parser().format_usage().startswith("usage: rljob ")


def test_run_without_the_trainer_extra_says_what_to_install() -> None:
    done = run_blocked(("ray", "torch"), "run", "-f", "examples/pong-local.yaml")
    assert done.returncode == 1
    assert done.stderr == ("rljob run: error: this command needs the trainer extra (ray[rllib], torch missing): "
                           "pip install 'rljob[trainer]'\n")
    assert done.stdout == ""


def test_play_without_torch_or_ale_says_what_to_install(tmp_path: Path) -> None:
    done = run_blocked(("torch", "ale_py", "ray"), "play", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == ("rljob play: error: this command needs the play extra (torch, ale-py missing): "
                           "pip install 'rljob[play]'\n")


def _module_path(name: str) -> Path | None:
    path = ROOT / "operator" / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, name: str) -> list[str]:
    """Every module an import statement in `path` names, at any depth (functions too), except under TYPE_CHECKING."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found.append(base)
            found.extend(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def test_cluster_commands_reach_no_extras_package_not_even_lazily() -> None:
    """Follows every import, those inside functions included, from the cluster commands through the package."""
    pending = [f"rljob.cli.{c}" for c in CLUSTER_COMMANDS] + ["rljob.cli"]
    seen: dict[str, str] = {}
    offenders = []
    while pending:
        name = pending.pop()
        path = _module_path(name)
        if path is None or name in seen:
            continue
        seen[name] = str(path)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        for imported in [*_imports(path, name), *parents]:
            top = imported.split(".")[0]
            if top in NOT_IN_BASE:
                offenders.append(f"{name} imports {imported}")
            elif top == "rljob":
                pending.append(imported)
    assert "rljob.cli.fetch" in seen and "rljob.resources.fetch" in seen and "rljob.trainer.recipes" in seen
    assert not offenders


def test_cluster_commands_import_and_check_recipe_args_without_the_extras() -> None:
    """What the static walk cannot follow: the recipes, imported by name when `submit` checks a recipe's arguments."""
    code = (f"import sys\nfor m in {NOT_IN_BASE!r}: sys.modules[m] = None\n"
            "from rljob.cli import build_parser\nfrom rljob.cli.submit import check_recipe_args\n"
            "build_parser()\n"
            f"for recipe in {RECIPES!r}: check_recipe_args(recipe, [])\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "operator")})
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
