"""`rljob operator`'s installation flags (scope, metrics scrapers) and its health endpoints.

The flags are what the chart passes for a namespaced install without cluster-wide permissions; what they do against
a real API server is in tests/integration/test_helm_namespaced.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from rljob.cli import build_parser
from rljob.cli import operator as operator_cli
from rljob.controller import credentials, handlers
from rljob.controller.credentials import Credentials


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["operator", *argv])


@pytest.fixture
def config() -> Iterator[handlers.OperatorConfig]:
    saved = handlers.CONFIG
    handlers.CONFIG = handlers.OperatorConfig()
    try:
        yield handlers.CONFIG
    finally:
        handlers.CONFIG = saved


@pytest.mark.parametrize("flag", [["--api-server-endpoint", "10.0.0.1:6443"], ["--no-api-server-discovery"]])
def test_api_server_flags_are_gone(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Jobs never reach the API server, so the operator neither takes nor looks for its addresses."""
    with pytest.raises(SystemExit):
        parse(*flag)
    assert "unrecognized arguments" in capsys.readouterr().err


def test_no_cluster_scan_needs_exact_namespaces() -> None:
    operator_cli._check_scope(parse("--no-cluster-scan", "-n", "team-a", "-n", "team-b"))
    operator_cli._check_scope(parse())  # cluster-wide with scanning: nothing to check
    with pytest.raises(SystemExit, match="needs --namespace"):
        operator_cli._check_scope(parse("--no-cluster-scan"))
    with pytest.raises(SystemExit, match="not patterns"):
        operator_cli._check_scope(parse("--no-cluster-scan", "-n", "team-*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health_server_is_live_at_once_and_ready_when_told() -> None:
    port = _free_port()

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        server = handlers.HealthServer(port, host="127.0.0.1")
        await server.start()
        base = f"http://127.0.0.1:{port}"
        seen = []
        try:
            for step in ("starting", "ready", "stopping"):
                if step == "ready":
                    server.set_ready(True, "reconciling")
                elif step == "stopping":
                    server.set_ready(False, "stopping")
                seen.append(await asyncio.to_thread(_get, f"{base}/healthz"))
                seen.append(await asyncio.to_thread(_get, f"{base}/readyz"))
        finally:
            await server.stop()
        return seen

    seen = asyncio.run(scenario())
    assert seen == [
        (200, {"status": "ok"}), (503, {"ready": False, "reason": "starting"}),
        (200, {"status": "ok"}), (200, {"ready": True, "reason": "reconciling"}),
        (200, {"status": "ok"}), (503, {"ready": False, "reason": "stopping"}),
    ]
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # stopped: nothing listens any more
        s.connect(("127.0.0.1", port))


def test_flags_reach_the_operator_config(monkeypatch: pytest.MonkeyPatch, config: handlers.OperatorConfig) -> None:
    import kopf

    ran: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: ran.update(kw))
    creds = Credentials(server="https://127.0.0.1:6443", token="t")
    monkeypatch.setattr(credentials, "load", lambda kubeconfig=None: creds)
    # run() makes `kubernetes` unimportable for the rest of the process; this one goes on with other tests.
    monkeypatch.setitem(sys.modules, "kubernetes", sys.modules.get("kubernetes"))
    args = parse("-n", "team-a", "--no-cluster-scan",
                 "--metrics-scrape-namespace", "monitoring", "--metrics-scrape-namespace", "monitoring",
                 "--health-port", "9999")
    assert operator_cli.run(args) == 0
    assert ran["namespaces"] == ["team-a"] and ran["clusterwide"] is False
    assert "liveness_endpoint" not in ran  # the operator serves /healthz and /readyz itself
    assert config.metrics_scrape_namespaces == ("monitoring",)
    assert config.health_port == 9999
    assert config.credentials is creds
