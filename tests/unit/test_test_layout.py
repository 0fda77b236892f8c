"""The test suite's own layout: no module under tests/ imports a test module.

Importing a test module runs its module-level code and puts its tests into the importer's namespace, where pytest
collects them a second time; and a helper kept in a test module is found only by reading tests. What tests share
lives in named modules instead: tests/builders.py (jobs, statuses, observations, timestamps), tests/tooling.py (build
and packaging), tests/integration/jobs.py (waits and the CLI against the control plane), and conftest fixtures.
"""
from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

from tests.tooling import ROOT

TESTS = ROOT / "tests"
# pytest's default python_files (pyproject.toml sets none of its own).
TEST_FILES = ("test_*.py", "*_test.py")


def is_test_module(dotted: str) -> bool:
    return any(fnmatch.fnmatch(f"{dotted.rsplit('.', 1)[-1]}.py", pattern) for pattern in TEST_FILES)


def imported_test_modules(path: Path, root: Path) -> list[str]:
    """The test modules `path` imports, named in full: `import a.test_b`, `from a.test_b import x`, `from a import
    test_b`, and their relative forms (resolved against `path`'s package under `root`)."""
    package = list(path.relative_to(root).parent.parts)
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if any(is_test_module(p) for p in alias.name.split("."))]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if any(is_test_module(p) for p in module.split(".")):
                found.append(module)
            else:
                found += [f"{module}.{alias.name}" for alias in node.names if is_test_module(alias.name)]
    return found


def test_no_module_under_tests_imports_a_test_module() -> None:
    offenders = {
        str(path.relative_to(ROOT)): names
        for path in sorted(TESTS.rglob("*.py"))
        if (names := imported_test_modules(path, ROOT))
    }
    assert not offenders, f"move what these import into tests/builders.py, tests/tooling.py or a fixture: {offenders}"


@pytest.mark.parametrize(("where", "source", "found"), [
    ("tests/unit/test_a.py", "from tests.unit.test_b import helper\n", ["tests.unit.test_b"]),
    ("tests/unit/test_a.py", "import tests.unit.test_b as b\n", ["tests.unit.test_b"]),
    ("tests/unit/test_a.py", "from tests.unit import test_b, builders\n", ["tests.unit.test_b"]),
    ("tests/unit/test_a.py", "from .test_b import helper\n", ["tests.unit.test_b"]),
    ("tests/unit/deep/test_a.py", "from .. import test_b\n", ["tests.unit.test_b"]),
    ("tests/unit/helpers.py", "def f():\n    from tests.unit.b_test import x\n", ["tests.unit.b_test"]),
    ("tests/unit/test_a.py", "from tests.builders import minimal_job\nfrom .conftest import fixture\nimport pytest\n", []),
    ("tests/unit/test_a.py", "from tests.testing_tools import x\n", []),
])
def test_imports_of_test_modules_are_found_in_every_form(tmp_path: Path, where: str, source: str, found: list[str]) -> None:
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert imported_test_modules(path, tmp_path) == found
