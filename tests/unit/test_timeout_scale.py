"""pytest-timeout's per-test backstop is scaled like the waits inside a test (tests/conftest.py), so a wait that runs
out reports what it waited for before the backstop stops the test."""
from __future__ import annotations

import pytest

from tests.cluster.processes import TIMEOUT_SCALE
from tests.conftest import configured_timeout


def limit(request: pytest.FixtureRequest) -> float:
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None, "no timeout marker: pytest-timeout would use its unscaled default"
    return float(marker.args[0])


def test_the_default_limit_is_scaled(request: pytest.FixtureRequest) -> None:
    default = configured_timeout(request.config)
    assert default > 0, "pyproject.toml sets pytest-timeout's timeout"
    assert limit(request) == default * TIMEOUT_SCALE


@pytest.mark.timeout(7)
def test_a_tests_own_limit_is_scaled(request: pytest.FixtureRequest) -> None:
    assert limit(request) == 7 * TIMEOUT_SCALE


@pytest.mark.timeout(timeout=5, func_only=True)
def test_a_limit_given_by_keyword_keeps_its_other_settings(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None
    assert marker.args == (5 * TIMEOUT_SCALE,)
    assert marker.kwargs == {"func_only": True}


@pytest.mark.timeout(0)
def test_no_limit_stays_none(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None and marker.args == (0,)
