"""Prometheus exposition of progress: names follow the conventions (units, _total for counters)."""
from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry, generate_latest

from rljob.trainer.metrics import ProgressCollector, serve
from rljob.trainer.progress import ProgressRecord


def scrape(collector: ProgressCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_only_info_before_the_first_iteration() -> None:
    text = scrape(ProgressCollector("pong", "ns", "pong"))
    assert 'rljob_info{namespace="ns",recipe="pong",rljob="pong"} 1.0' in text
    assert "rljob_training_iteration" not in text


def test_metrics_after_an_iteration() -> None:
    c = ProgressCollector("pong", "ns", "pong")
    c.update(ProgressRecord(5, -20.0, 5000, 250.0, 50.0, None, 2, 1_800_000_000.0), checkpoint_iteration=5)
    text = scrape(c)
    labels = '{namespace="ns",recipe="pong",rljob="pong"}'
    for line in (
        f"rljob_training_iteration{labels} 5.0",
        f"rljob_episode_return_mean{labels} -20.0",
        f"rljob_env_steps_total{labels} 5000.0",
        f"rljob_env_steps_per_second{labels} 250.0",
        f"rljob_training_time_seconds_total{labels} 50.0",
        f"rljob_attempt{labels} 2.0",
        f"rljob_last_checkpoint_iteration{labels} 5.0",
        "# TYPE rljob_env_steps_total counter",
    ):
        assert line in text


def test_serves_over_http() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = ProgressCollector("job", "ns", "cartpole")
    c.update(ProgressRecord(1, 10.0, 100, 10.0, 1.0))
    serve(c, port, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "rljob_training_iteration" in body
