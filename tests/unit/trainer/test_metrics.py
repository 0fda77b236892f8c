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
    text = scrape(ProgressCollector("pong-1", "ns", "pong", experiment="pong"))
    assert 'rljob_driver_info{experiment="pong",namespace="ns",recipe="pong",rltrainingjob="pong-1"} 1.0' in text
    assert "rljob_job_training_iterations" not in text


def test_metrics_after_an_iteration() -> None:
    c = ProgressCollector("pong", "ns", "pong")
    c.update(ProgressRecord(5, -20.0, 5000, 250.0, 50.0, None, 2, 1_800_000_000.0), checkpoint_iteration=5)
    text = scrape(c)
    labels = '{namespace="ns",rltrainingjob="pong"}'
    for line in (
        f"rljob_job_training_iterations_total{labels} 5.0",
        f"rljob_job_episode_return_mean{labels} -20.0",
        f"rljob_job_env_steps_total{labels} 5000.0",
        f"rljob_job_env_steps_per_second{labels} 250.0",
        f"rljob_job_training_seconds_total{labels} 50.0",
        f"rljob_job_attempt{labels} 2.0",
        f"rljob_job_last_checkpoint_iteration{labels} 5.0",
        f"rljob_job_last_iteration_timestamp_seconds{labels} 1.8e+09",
        "# TYPE rljob_job_env_steps_total counter",
        "# TYPE rljob_job_training_iterations_total counter",
        "# TYPE rljob_job_episode_return_mean gauge",
    ):
        assert line in text


def test_the_driver_exports_what_rljob_api_metrics_defines_for_it() -> None:
    """One scheme: every family the driver emits is defined for it, and every one defined for it is emitted."""
    from rljob.api import metrics as m

    c = ProgressCollector("job", "ns", "pong", experiment="exp")
    c.update(ProgressRecord(1, 1.0, 10, 1.0, 1.0, None, 1, 1.0), checkpoint_iteration=1)
    emitted = {(f.name, f.type) for f in c.collect()}
    defined = {(d.name, str(d.kind)) for d in m.exported_by(m.Source.DRIVER)}
    assert emitted == defined
    for fam in c.collect():
        for sample in fam.samples:
            assert set(m.JOB_LABELS) <= set(sample.labels), sample


def test_serves_over_http() -> None:
    c = ProgressCollector("job", "ns", "cartpole")
    c.update(ProgressRecord(1, 10.0, 100, 10.0, 1.0))
    server = serve(c, 0, addr="127.0.0.1")
    assert server is not None
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "rljob_job_training_iterations_total" in body
