"""What every test under tests/ shares: pytest-timeout's limit scaled like every wait inside a test.

A test's waits give up after their limit times ``RLJOB_TEST_TIMEOUT_SCALE`` (:data:`tests.cluster.processes.
TIMEOUT_SCALE`) and then raise with what they were waiting for and what they saw. pytest-timeout's per-test limit
(pyproject.toml's ``timeout``, or a test's ``@pytest.mark.timeout``) is only the backstop for a test that hangs
outside any wait; scaled by the same factor it stays above the waits it contains, so a slow step fails with its own
diagnostics, not with a stack dump from the backstop.
"""

from __future__ import annotations

import os

import pytest

from tests.cluster.processes import TIMEOUT_SCALE


def configured_timeout(config: pytest.Config) -> float:
    """The per-test limit pytest-timeout applies without a marker, looked up in its order: the command line, the
    PYTEST_TIMEOUT environment variable, the ini file; 0 is none."""
    for value in (config.getoption("timeout", None), os.environ.get("PYTEST_TIMEOUT"), config.getini("timeout")):
        if value not in (None, ""):
            return float(value)
    return 0.0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    default = configured_timeout(config)
    for item in items:
        marker = item.get_closest_marker("timeout")
        args, kwargs = (list(marker.args), dict(marker.kwargs)) if marker is not None else ([], {})
        given = args.pop(0) if args else kwargs.pop("timeout", None)
        limit = default if given is None else float(given)
        if limit > 0:
            item.add_marker(pytest.mark.timeout(limit * TIMEOUT_SCALE, *args, **kwargs), append=False)
