"""What the operator reads from a head with no credentials: GET /progress, and the termination message."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rljob.api.constants import (
    ENV_TERMINATION_LOG,
    MAX_PROGRESS_BYTES,
    PROGRESS_PATH,
    TERMINATION_MESSAGE_PATH,
    TERMINATION_PROGRESS_KEY,
)
from rljob.api.models import Progress, parse_progress, termination_progress
from rljob.trainer.metrics import DriverServer, ProgressCollector, serve
from rljob.trainer.progress import ProgressRecord
from rljob.trainer.sinks import MetricsSink, Outcome, Sinks, TerminationMessageSink

RECORD = ProgressRecord(7, -20.25, 7000, 350.0, 70.0, "/rljob/checkpoints/iteration-000007", 2, 1_800_000_000.0)
WIRE = {
    "attempt": 2,
    "iteration": 7,
    "episodeReturnMean": -20.25,
    "envSteps": 7000,
    "envStepsPerSecond": 350.0,
    "timeTotalSeconds": 70.0,
    "lastCheckpoint": "/rljob/checkpoints/iteration-000007",
    "updateTime": "2027-01-15T08:00:00Z",
}
LONG_CHECKPOINT = "/rljob/checkpoints/" + "d" * 10_000 + "/iteration-000007"


@pytest.fixture
def collector() -> ProgressCollector:
    return ProgressCollector("pong", "team-a", "pong", experiment="pong")


@pytest.fixture
def server(collector: ProgressCollector) -> Iterator[DriverServer]:
    started = serve(collector, 0, addr="127.0.0.1")
    assert started is not None
    yield started
    started.shutdown()
    started.server_close()


def get(server: DriverServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_progress_is_an_empty_object_before_the_first_iteration(server: DriverServer) -> None:
    status, content_type, body = get(server, PROGRESS_PATH)
    assert (status, content_type, body) == (200, "application/json", b"{}")
    assert Progress.model_validate(json.loads(body)).wire() == {}  # nothing for the operator to write


def test_progress_is_the_latest_record_as_status_progress(server: DriverServer, collector: ProgressCollector) -> None:
    sinks = Sinks([MetricsSink(collector)])
    sinks.record(RECORD.with_checkpoint(None))
    sinks.record(RECORD)  # the latest wins
    status, content_type, body = get(server, PROGRESS_PATH)
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == WIRE
    assert Progress.model_validate(json.loads(body), strict=False).wire() == WIRE
    assert parse_progress(body).wire() == WIRE  # as the operator reads it: strictly
    assert get(server, PROGRESS_PATH + "?attempt=2")[2] == body  # a query changes nothing


def test_progress_stays_within_its_bound_with_a_huge_checkpoint_path(server: DriverServer, collector: ProgressCollector) -> None:
    collector.update(RECORD.with_checkpoint(LONG_CHECKPOINT))
    status, _, body = get(server, PROGRESS_PATH)
    assert status == 200 and len(body) < MAX_PROGRESS_BYTES
    progress = json.loads(body)
    assert progress["lastCheckpoint"].endswith("/iteration-000007") and progress["iteration"] == 7
    assert parse_progress(body).iteration == 7


def test_metrics_share_the_port(server: DriverServer, collector: ProgressCollector) -> None:
    collector.update(RECORD, checkpoint_iteration=7)
    status, content_type, body = get(server, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert 'rljob_job_training_iterations_total{namespace="team-a",rltrainingjob="pong"} 7.0' in body.decode()


@pytest.mark.parametrize("path", ["/", "/progress/", "/progressx", "/metrics/x", "/favicon.ico"])
def test_other_paths_are_not_found(server: DriverServer, path: str) -> None:
    status, _, _ = get(server, path)
    assert status == 404


def test_a_taken_port_is_logged_and_training_goes_on(server: DriverServer, collector: ProgressCollector) -> None:
    assert serve(collector, server.port, addr="127.0.0.1") is None
    assert get(server, PROGRESS_PATH)[0] == 200  # the first one still answers


def message(path: Path) -> dict:
    text = path.read_text()
    assert text == json.dumps(json.loads(text), separators=(",", ":"))  # compact: one line, no spaces
    return json.loads(text)


def test_termination_message_holds_the_latest_progress(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    sinks = Sinks([TerminationMessageSink(log)])
    sinks.record(RECORD.with_checkpoint(None))
    assert message(log) == {TERMINATION_PROGRESS_KEY: {k: v for k, v in WIRE.items() if k != "lastCheckpoint"}}
    sinks.record(RECORD)
    assert message(log) == {TERMINATION_PROGRESS_KEY: WIRE}  # rewritten, not appended
    read = termination_progress(log.read_text())  # as the operator reads the container's state.terminated.message
    assert read is not None and read.wire() == WIRE
    saved = RECORD.with_checkpoint("/rljob/checkpoints/iteration-000008")
    sinks.close(Outcome(143, "interrupted", saved, saved.checkpoint))
    assert message(log)[TERMINATION_PROGRESS_KEY]["lastCheckpoint"] == "/rljob/checkpoints/iteration-000008"


def test_termination_message_stays_within_what_kubernetes_keeps(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    TerminationMessageSink(log).record(RECORD.with_checkpoint(LONG_CHECKPOINT))
    assert len(log.read_bytes()) < MAX_PROGRESS_BYTES
    progress = message(log)[TERMINATION_PROGRESS_KEY]
    assert progress["lastCheckpoint"].endswith("/iteration-000007")
    read = termination_progress(log.read_text())
    assert read is not None and read.iteration == 7


def test_close_without_a_record_leaves_the_file_alone(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    TerminationMessageSink(log).close(Outcome(3, "the cluster did not assemble"))
    assert not log.exists()


def test_the_environment_names_the_file(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"  # need not exist yet
    sink = TerminationMessageSink.in_pod({ENV_TERMINATION_LOG: str(log)})
    assert sink is not None and sink.path == log
    sink.record(RECORD)
    assert message(log) == {TERMINATION_PROGRESS_KEY: WIRE}


def test_the_kubelets_file_is_used_only_where_it_exists(tmp_path: Path) -> None:
    kubelets = tmp_path / "termination-log"
    assert TerminationMessageSink.in_pod({}, default=kubelets) is None  # outside a pod: nothing is created
    assert TerminationMessageSink.in_pod({ENV_TERMINATION_LOG: ""}, default=kubelets) is None
    assert not kubelets.exists()
    kubelets.touch()  # what the kubelet does in every container
    sink = TerminationMessageSink.in_pod({}, default=kubelets)
    assert sink is not None and sink.path == kubelets


def test_no_sink_where_there_is_nowhere_to_write(tmp_path: Path) -> None:
    assert TerminationMessageSink.in_pod({ENV_TERMINATION_LOG: str(tmp_path / "missing" / "termination-log")}) is None
    assert TerminationMessageSink.in_pod({ENV_TERMINATION_LOG: str(tmp_path)}) is None  # a directory
    assert TerminationMessageSink.in_pod({}, default=tmp_path / "missing" / "termination-log") is None
    assert Path(TERMINATION_MESSAGE_PATH).is_file() or TerminationMessageSink.in_pod({}) is None  # the real default
