"""kubectl's output formats for `rljob list` and `rljob status`, and the rows `list --watch` prints."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml

from rljob.cli.jobs import _Printer
from rljob.cli.output import as_list, change_key, document, headers, resource_name, row, table
from tests.builders import minimal_job

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)


def job(name: str = "pong", **status: Any) -> dict[str, Any]:
    """A job of experiment `exp`, created an hour before NOW, with `status`: what `rljob list` reads."""
    return minimal_job(name, namespace="team-a", metadata={"creationTimestamp": "2026-12-02T11:00:00Z"}, status=status,
                       experiment="exp", workers={"replicas": 2})


def test_plain_row_matches_the_header() -> None:
    running = job(phase="Running", workers="2/2", startTime="2026-12-02T11:58:00Z", attempts=1, headPod="pong-head-1",
                  progress={"iteration": 12, "episodeReturnMean": -20.456, "envSteps": 40000, "envStepsPerSecond": 512.4})
    assert headers(False, False) == ["NAME", "EXPERIMENT", "PHASE", "WORKERS", "ITERATION", "REWARD", "DURATION", "AGE"]
    assert row(running, False, False, NOW) == ["pong", "exp", "Running", "2/2", "12", "-20.46", "2m00s", "1h00m"]


def test_wide_adds_reason_attempts_steps_rate_head_pod_and_suspend() -> None:
    failed = job(phase="Failed", reason="DriverFailed", attempts=2, headPod="pong-head-2",
                 progress={"envSteps": 40000, "envStepsPerSecond": 512.4})
    head = headers(True, True)
    cells = row(failed, True, True, NOW)
    assert len(head) == len(cells)
    assert dict(zip(head, cells, strict=True)) == {
        "NAMESPACE": "team-a", "NAME": "pong", "EXPERIMENT": "exp", "PHASE": "Failed", "WORKERS": "-", "ITERATION": "-",
        "REWARD": "-", "DURATION": "-", "AGE": "1h00m", "REASON": "DriverFailed", "ATTEMPTS": "2", "ENV-STEPS": "40000",
        "STEPS/S": "512", "HEAD-POD": "pong-head-2", "SUSPEND": "false",
    }


def test_a_new_job_without_status_shows_pending() -> None:
    fresh = job()
    del fresh["status"]
    assert row(fresh, False, False, NOW)[2] == "Pending"


def test_table_aligns_columns_like_kubectl() -> None:
    assert table([["NAME", "PHASE"], ["a-long-name", "Running"]]) == "NAME          PHASE\na-long-name   Running"


def test_json_and_yaml_print_a_v1_list_of_the_objects() -> None:
    items = [job("a"), job("b")]
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        doc = load(document(as_list(items), fmt))
        assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
        assert doc["items"] == items


def test_name_is_resource_dot_group_slash_name() -> None:
    assert resource_name(job("pong")) == "rltrainingjob.rljob.dev/pong"


def test_watch_ignores_changes_of_the_clocks_only() -> None:
    head = headers(False, False)
    a = row(job(phase="Running", startTime="2026-12-02T11:58:00Z"), False, False, NOW)
    later = row(job(phase="Running", startTime="2026-12-02T11:58:00Z"), False, False, NOW.replace(hour=13))
    assert a != later and change_key(a, head) == change_key(later, head)
    assert change_key(a, head) != change_key(row(job(phase="Suspended"), False, False, NOW), head)


def test_watch_printer_prints_a_row_per_change(capsys: pytest.CaptureFixture[str]) -> None:
    printer = _Printer(None, False)
    printer.start([job("a", phase="Pending")])
    printer.show(job("a", phase="Pending"))  # a heartbeat: nothing new
    printer.show(job("a", phase="Running", workers="2/2"))
    printer.show(job("a-much-longer-name", phase="Pending"))  # a wider cell widens its row, not the header
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["NAME", "EXPERIMENT", "PHASE"], ["a", "exp", "Pending"], ["a", "exp", "Running"], ["a-much-longer-name", "exp", "Pending"],
    ]
    assert lines[0].index("EXPERIMENT") == lines[1].index("exp")


def test_watch_printer_in_json_and_name(capsys: pytest.CaptureFixture[str]) -> None:
    printer = _Printer("name", False)
    printer.start([job("a")])
    printer.show(job("a"), deleted=True)
    assert capsys.readouterr().out == "rltrainingjob.rljob.dev/a\nrltrainingjob.rljob.dev/a\n"
    printer = _Printer("json", False)
    printer.start([job("a")])
    printer.show(job("b"))
    out = capsys.readouterr().out
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(out.rstrip()):
        obj, end = decoder.raw_decode(out, at)
        docs.append(obj["metadata"]["name"])
        at = end + 1
    assert docs == ["a", "b"]
