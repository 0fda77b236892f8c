"""The status reporter against a real (plain HTTP) server: path, headers, body, and best-effort failure."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from rljob.trainer.progress import ProgressRecord
from rljob.trainer.status_reporter import StatusReporter


class Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, object]] = []
    status = 200

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"requests": [], "status": 200})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


RECORD = ProgressRecord(7, -18.25, 70_000, 900.0, 77.0, "/rljob/checkpoints/iteration-000007", 2, 0.0)


def test_patches_status_progress(server: tuple[str, type[Recorder]], tmp_path: Path) -> None:
    url, handler = server
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    reporter = StatusReporter(url, "team-a", "pong", token_file=token)
    assert reporter.report(RECORD) is True
    (req,) = handler.requests
    assert req["path"] == "/apis/rljob.dev/v1alpha1/namespaces/team-a/rltrainingjobs/pong/status"
    headers = req["headers"]
    assert isinstance(headers, dict)
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert headers["Authorization"] == "Bearer secret-token"
    assert req["body"] == {
        "status": {
            "progress": {
                "attempt": 2,
                "iteration": 7,
                "episodeReturnMean": -18.25,
                "envSteps": 70000,
                "envStepsPerSecond": 900.0,
                "timeTotalSeconds": 77.0,
                "lastCheckpoint": "/rljob/checkpoints/iteration-000007",
                "updateTime": "1970-01-01T00:00:00Z",
            }
        }
    }


def test_rotated_token_is_reread(server: tuple[str, type[Recorder]], tmp_path: Path) -> None:
    url, handler = server
    token = tmp_path / "token"
    token.write_text("one")
    reporter = StatusReporter(url, "ns", "job", token_file=token)
    reporter.report(RECORD)
    token.write_text("two")
    reporter.report(RECORD)
    assert [r["headers"]["Authorization"] for r in handler.requests] == ["Bearer one", "Bearer two"]  # type: ignore[index]


def test_failures_back_off_and_never_raise(server: tuple[str, type[Recorder]], caplog: pytest.LogCaptureFixture) -> None:
    url, handler = server
    handler.status = 403
    now = [100.0]
    reporter = StatusReporter(url, "ns", "job", clock=lambda: now[0])
    assert reporter.report(RECORD) is False
    assert "HTTP 403" in caplog.text and "patch on rltrainingjobs/status" in caplog.text
    assert reporter.report(RECORD) is False  # backing off: not even sent
    assert len(handler.requests) == 1
    now[0] += 1.0
    reporter.report(RECORD)  # 1 s backoff over: tried again, fails again, 2 s backoff
    assert len(handler.requests) == 2 and reporter.retry_at == 103.0
    handler.status = 200
    now[0] += 2.0
    assert reporter.report(RECORD) is True
    assert reporter.failures == 0


def test_unreachable_api_server_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    reporter = StatusReporter("http://127.0.0.1:9", "ns", "job", timeout_s=1.0)
    assert reporter.report(RECORD) is False
    assert "cannot reach the API server" in caplog.text


def test_in_cluster_needs_service_host_and_token(tmp_path: Path) -> None:
    assert StatusReporter.in_cluster("ns", "job", env={}, sa_dir=tmp_path) is None
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    assert StatusReporter.in_cluster("ns", "job", env=env, sa_dir=tmp_path) is None
    (tmp_path / "token").write_text("t")
    reporter = StatusReporter.in_cluster("ns", "job", env=env, sa_dir=tmp_path)
    assert reporter is not None
    assert reporter.url == "https://10.0.0.1:6443/apis/rljob.dev/v1alpha1/namespaces/ns/rltrainingjobs/job/status"
    v6 = StatusReporter.in_cluster("ns", "job", env={"KUBERNETES_SERVICE_HOST": "fd00::1"}, sa_dir=tmp_path)
    assert v6 is not None and v6.url.startswith("https://[fd00::1]:443/")
