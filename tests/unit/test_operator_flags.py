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
from typing import Any

import pytest

from rljob.cli import build_parser
from rljob.cli import operator as operator_cli
from rljob.controller import credentials
from rljob.controller.credentials import Credentials
from rljob.controller.health import HealthServer


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["operator", *argv])


@pytest.mark.parametrize("flag", [["--api-server-endpoint", "10.0.0.1:6443"], ["--no-api-server-discovery"]])
def test_api_server_flags_are_gone(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Jobs never reach the API server, so the operator neither takes nor looks for its addresses."""
    with pytest.raises(SystemExit):
        parse(*flag)
    assert "unrecognized arguments" in capsys.readouterr().err


def test_no_cluster_scan_needs_exact_namespaces() -> None:
    operator_cli.check_scope(parse("--no-cluster-scan", "-n", "team-a", "-n", "team-b"))
    operator_cli.check_scope(parse())  # cluster-wide with scanning: nothing to check
    with pytest.raises(SystemExit, match="needs --namespace"):
        operator_cli.check_scope(parse("--no-cluster-scan"))
    with pytest.raises(SystemExit, match="not patterns"):
        operator_cli.check_scope(parse("--no-cluster-scan", "-n", "team-*"))
    # A list is a pattern as the streams read it (kopf's syntax): it would be served by a cluster-wide watch.
    with pytest.raises(SystemExit, match="not patterns"):
        operator_cli.check_scope(parse("--no-cluster-scan", "-n", "team-a,team-b"))


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
        server = HealthServer(port, host="127.0.0.1")
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


def test_flags_reach_the_operator_that_kopf_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    from rljob.controller import handlers
    from rljob.controller.operator import Operator

    ran: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: ran.update(kw))
    creds = Credentials(server="https://127.0.0.1:6443", token="t")
    monkeypatch.setattr(credentials, "load", lambda kubeconfig=None: creds)
    monkeypatch.setenv("POD_ID", "rljob-operator-0")
    # run() makes `kubernetes` unimportable for the rest of the process; this one goes on with other tests.
    monkeypatch.setitem(sys.modules, "kubernetes", sys.modules.get("kubernetes"))
    args = parse("-n", "team-a", "--no-cluster-scan",
                 "--metrics-scrape-namespace", "monitoring", "--metrics-scrape-namespace", "monitoring",
                 "--health-port", "9999", "--metrics-port", "0", "--cluster-cidr", "10.244.0.0/16", "--concurrency", "3",
                 "--dns-selector", "k8s-app=kube-dns,tier=dns", "--leader-elect", "--kueue", "--progress-interval", "0")
    assert operator_cli.run(args) == 0
    assert ran["namespaces"] == ["team-a"] and ran["clusterwide"] is False
    assert ran["standalone"] is True and ran["identity"] == "rljob-operator-0"
    assert "liveness_endpoint" not in ran  # the operator serves /healthz and /readyz itself
    operator, registry = ran["memo"], ran["registry"]
    assert isinstance(operator, Operator) and isinstance(registry, kopf.OperatorRegistry)
    assert {h.fn for h in registry._activities.get_all_handlers()} == {handlers.login, handlers.startup, handlers.cleanup}
    config = operator.config
    assert config.credentials is creds and config.namespaces == ("team-a",) and config.concurrency == 3
    assert config.build.metrics_scrape_namespaces == ("monitoring",) and config.build.cluster_cidrs == ("10.244.0.0/16",)
    assert config.build.dns_labels == (("k8s-app", "kube-dns"), ("tier", "dns"))
    assert config.health_port == 9999 and config.metrics_port is None and operator.metrics is None
    assert config.kueue and operator.workloads is not None and config.progress.interval_seconds == 0
    assert config.lease is not None and config.lease.namespace == "rljob-system"
    assert config.lease.identity.startswith("rljob-operator-0_") and operator.elector is not None


@pytest.mark.parametrize(("flags", "problem"), [
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--cluster-cidr", "10.244.0.1/16"], "has host bits set"),
    (["--health-port", "8080", "--metrics-port", "8080"], "are both 8080"),
])
def test_a_bad_value_ends_the_command_before_kopf_starts(monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                           problem: str) -> None:
    import kopf

    monkeypatch.setattr(kopf, "run", lambda **kw: pytest.fail("kopf started"))
    monkeypatch.setattr(credentials, "load", lambda kubeconfig=None: Credentials(server="https://127.0.0.1:6443"))
    monkeypatch.setitem(sys.modules, "kubernetes", sys.modules.get("kubernetes"))
    with pytest.raises(SystemExit, match=problem) as exit_:
        operator_cli.run(parse(*flags))
    assert str(exit_.value).startswith("rljob operator: ")
