"""`rljob logs`: an earlier attempt's driver log (its head pod's, else the tail kept in status, else which attempts
have one), and `--ray`'s copy of Ray's log folder and the container logs of every pod, through fake seams and, for
the pack in the pod, a stand-in kubectl that runs the pod's side here."""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rljob.api import constants as c
from rljob.cli import build_parser
from rljob.cli.cluster import CliError
from rljob.cli.forward import fetch_folder
from rljob.cli.jobs import attempt_log, last_lines, logs_cmd, no_attempt_log
from rljob.cli.raylogs import RAY_LOG_DIR, JobPod, PodLogs, collect, job_pods, pod_folder, summary_line
from tests.builders import minimal_job


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ── --ray ──────────────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", ".hidden", "a\\b"])
def test_a_pod_name_that_is_not_a_plain_name_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(CliError, match="not a plain file name"):
        pod_folder(tmp_path, name)


def test_pod_folders_are_under_dest() -> None:
    assert pod_folder(Path("out"), "pong-workers-0") == Path("out/pong-workers-0")


def v1pod(name: str, role: str | None, phase: str, container: str, running: bool = True, restarts: int = 0) -> Any:
    state = client.V1ContainerState(running=client.V1ContainerStateRunning() if running else None,
                                    terminated=None if running else client.V1ContainerStateTerminated(exit_code=1))
    labels = {c.LABEL_JOB: "pong", **({c.LABEL_ROLE: role} if role else {})}
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels=labels),
                        status=client.V1PodStatus(phase=phase, container_statuses=[client.V1ContainerStatus(
                            name=container, state=state, restart_count=restarts, ready=running, image="i", image_id="",
                            container_id="")]))


def test_the_jobs_ray_pods_with_their_container_and_whether_an_exec_can_reach_it() -> None:
    items = [
        v1pod("pong-workers-1", c.ROLE_WORKER, "Running", c.CONTAINER_NAME_WORKER, restarts=2),
        v1pod("pong-head-2", c.ROLE_HEAD, "Running", c.CONTAINER_NAME_HEAD),
        v1pod("pong-head-1", c.ROLE_HEAD, "Failed", c.CONTAINER_NAME_HEAD, running=False),
        v1pod("pong-fetch", None, "Running", "reader"),  # `rljob fetch`'s reader pod: not a Ray pod
    ]
    assert job_pods(items) == [
        JobPod("pong-head-1", c.CONTAINER_NAME_HEAD, running=False, restarted=False),
        JobPod("pong-head-2", c.CONTAINER_NAME_HEAD, running=True, restarted=False),
        JobPod("pong-workers-1", c.CONTAINER_NAME_WORKER, running=True, restarted=True),
    ]


class Seams:
    """What the pods hold: Ray's log folders (as the pack in the pod sends them) and container logs."""

    def __init__(self, archives: dict[str, bytes | CliError | None], logs: dict[tuple[str, bool], str]) -> None:
        self.archives, self.logs = archives, logs
        self.fetched: list[tuple[str, str, str]] = []

    def fetch(self, pod: str, container: str, remote_dir: str) -> bytes | None:
        self.fetched.append((pod, container, remote_dir))
        got = self.archives[pod]
        if isinstance(got, CliError):
            raise got
        return got

    def read_log(self, pod: str, container: str, previous: bool) -> str:
        if (pod, previous) not in self.logs:
            raise CliError(f"log of {pod}: 400 Bad Request")
        return self.logs[(pod, previous)]


def test_collect_copies_every_pod_and_a_pods_failure_stops_only_that_pod(tmp_path: Path) -> None:
    pods = [JobPod("pong-head-1", c.CONTAINER_NAME_HEAD, running=True, restarted=False),
            JobPod("pong-workers-0", c.CONTAINER_NAME_WORKER, running=True, restarted=True),
            JobPod("pong-workers-1", c.CONTAINER_NAME_WORKER, running=True, restarted=False),
            JobPod("pong-workers-2", c.CONTAINER_NAME_WORKER, running=False, restarted=False),
            JobPod("pong-workers-3", c.CONTAINER_NAME_WORKER, running=True, restarted=False)]
    seams = Seams(
        archives={
            "pong-head-1": tar_gz({"./raylet.out": b"raylet", "./old/gcs_server.err": b"gcs"}),
            "pong-workers-0": tar_gz({"./ok.log": b"fine", "../../escaped.log": b"hostile"}),  # refused as a whole
            "pong-workers-1": None,  # Ray not started yet
            "pong-workers-3": CliError("copy from pod pong-workers-3: container not found"),
        },
        logs={("pong-head-1", False): "driver\n", ("pong-workers-0", False): "now\n", ("pong-workers-0", True): "before\n",
              ("pong-workers-1", False): "w1\n", ("pong-workers-2", False): "w2\n", ("pong-workers-3", False): "w3\n"})
    dest = tmp_path / "out"
    got = {g.pod: g for g in collect(pods, dest, seams.fetch, seams.read_log)}

    head = dest / "pong-head-1"
    assert (head / "ray" / "raylet.out").read_bytes() == b"raylet" and (head / "ray" / "old" / "gcs_server.err").read_bytes() == b"gcs"
    assert (head / f"{c.CONTAINER_NAME_HEAD}.log").read_text() == "driver\n"
    assert got["pong-head-1"].ray_files == 2 and not got["pong-head-1"].problems

    w0 = dest / "pong-workers-0"
    assert (w0 / f"{c.CONTAINER_NAME_WORKER}.log").read_text() == "now\n"
    assert (w0 / f"{c.CONTAINER_NAME_WORKER}.previous.log").read_text() == "before\n"
    assert not (w0 / "ray" / "ok.log").exists() and not list(tmp_path.rglob("escaped.log"))
    assert got["pong-workers-0"].problems and "would land outside" in got["pong-workers-0"].problems[0]

    assert got["pong-workers-1"].notes == [f"no {RAY_LOG_DIR} (Ray not started yet)"] and not got["pong-workers-1"].problems
    assert got["pong-workers-2"].notes == ["not running: Ray's logs went with its container"]
    assert got["pong-workers-3"].problems == ["copy from pod pong-workers-3: container not found"]
    assert (dest / "pong-workers-3" / f"{c.CONTAINER_NAME_WORKER}.log").read_text() == "w3\n"
    # Only running containers are exec'd into, each in its own container, for Ray's folder.
    assert seams.fetched == [(p.name, p.container, RAY_LOG_DIR) for p in pods if p.running]


def test_summary_lines_say_what_is_where_and_what_is_missing(tmp_path: Path) -> None:
    done = PodLogs("pong-head-1", ray_files=12, container_logs=["ray-head.log"])
    assert summary_line(done, Path("out")) == ("pong-head-1: 12 Ray log file(s) in out/pong-head-1/ray; "
                                               "container log out/pong-head-1/ray-head.log")
    failed = PodLogs("pong-workers-0", notes=["not running: Ray's logs went with its container"], problems=["log of x: 400"])
    assert summary_line(failed, Path("out")) == ("pong-workers-0: not running: Ray's logs went with its container; "
                                                 "failed: log of x: 400")
    assert summary_line(PodLogs("p"), Path("out")) == "p: nothing copied"


# A stand-in for kubectl exec: runs the command after `--` here, the pod's /tmp mapped to a local folder.
FAKE_KUBECTL = f"""#!{sys.executable}
import json, os, subprocess, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
cmd = sys.argv[sys.argv.index("--") + 1:]
sys.exit(subprocess.run([sys.executable] + cmd[1:-1] + [os.environ["FAKE_TMP"] + cmd[-1][len("{c.TMP_MOUNT}"):]]).returncode)
"""


def test_the_pack_in_the_pod_follows_session_latest_and_unpacks_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's session_latest is a link to the session's folder: the pack must copy the files behind it."""
    pod_tmp = tmp_path / "pod-tmp"
    session = pod_tmp / "ray" / "session_2026-12-04_00-00-00_1" / "logs"
    (session / "old").mkdir(parents=True)
    (session / "raylet.out").write_text("raylet\n")
    (session / "old" / "worker-1.err").write_text("err\n")
    os.symlink(session.parent.name, pod_tmp / "ray" / "session_latest")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "kubectl.log"))
    monkeypatch.setenv("FAKE_TMP", str(pod_tmp))
    cluster: Any = SimpleNamespace(namespace="team-a")
    args = argparse.Namespace(kubeconfig=None, context=None)

    pods = [JobPod("pong-workers-0", c.CONTAINER_NAME_WORKER, running=True, restarted=False)]
    got = collect(pods, tmp_path / "out", lambda pod, container, remote: fetch_folder(cluster, args, pod, remote, container),
                  lambda pod, container, previous: "log\n")
    assert got[0].ray_files == 2 and not got[0].problems
    out = tmp_path / "out" / "pong-workers-0" / "ray"
    assert (out / "raylet.out").read_text() == "raylet\n" and (out / "old" / "worker-1.err").read_text() == "err\n"
    (call,) = [json.loads(line) for line in (tmp_path / "kubectl.log").read_text().splitlines()]
    assert call[:6] == ["exec", "--namespace", "team-a", "pong-workers-0", "-c", c.CONTAINER_NAME_WORKER]
    assert call[-1] == RAY_LOG_DIR
    # Before Ray has started there is no folder: None, not an error.
    (pod_tmp / "ray" / "session_latest").unlink()
    assert fetch_folder(cluster, args, "pong-workers-0", RAY_LOG_DIR, c.CONTAINER_NAME_WORKER) is None


# ── --attempt ──────────────────────────────────────────────────────────────────────────────────────────────


class FakeCore:
    """The API server's pods of a job: head pods by name with their attempt label, and their logs (or errors)."""

    def __init__(self, heads: dict[str, int], logs: dict[str, str | ApiException]) -> None:
        self.heads, self.logs = heads, logs
        self.selectors: list[str] = []

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        self.selectors.append(label_selector)
        items = [client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels={c.LABEL_ATTEMPT: str(attempt)}))
                 for name, attempt in self.heads.items()]
        return client.V1PodList(items=items)

    def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int | None = None, **kw: Any) -> str:
        got = self.logs.get(name, ApiException(404, "Not Found"))
        if isinstance(got, ApiException):
            raise got
        return "".join(got.splitlines(keepends=True)[-tail_lines:]) if tail_lines else got


class FakeCluster:
    def __init__(self, core: FakeCore) -> None:
        self._core, self.namespace = core, "team-a"

    def core(self) -> FakeCore:
        return self._core

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def job(attempts: int, kept: dict[int, str] | None = None) -> dict[str, Any]:
    """A job failed after `attempts` attempts, the operator keeping the log tails of the attempts in `kept`."""
    status: dict[str, Any] = {"phase": "Failed", "attempts": attempts, "headPod": f"pong-head-{attempts}"}
    if kept:
        status["attemptLogs"] = [{"attempt": a, "logTail": t} for a, t in kept.items()]
    return minimal_job("pong", uid="u1", status=status)


def logs_args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"name": "pong", "follow": False, "tail": None, "attempt": None, "ray": False,
                                 "dest": None, **kw})


def test_an_earlier_attempt_is_read_from_its_head_pod(capsys: pytest.CaptureFixture[str]) -> None:
    core = FakeCore({"pong-head-1": 1, "pong-head-2": 2}, {"pong-head-1": "one\ntwo\nboom 1\n", "pong-head-2": "boom 2\n"})
    assert attempt_log(FakeCluster(core), logs_args(attempt=1, tail=2), job(2, {1: "kept\n"})) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().out == "two\nboom 1\n"  # the pod's whole log is better than the kept tail
    assert core.selectors == [f"{c.LABEL_JOB}=pong,{c.LABEL_ROLE}={c.ROLE_HEAD},{c.LABEL_CONTROLLER_UID}=u1"]


def test_a_gone_or_unreadable_pod_falls_back_to_the_kept_tail(capsys: pytest.CaptureFixture[str]) -> None:
    core = FakeCore({"pong-head-2": 2}, {"pong-head-2": ApiException(500, "node gone")})
    cluster: Any = FakeCluster(core)
    assert attempt_log(cluster, logs_args(attempt=1), job(3, {1: "a\nb\n", 2: "c\nd\n"})) == 0
    out = capsys.readouterr()
    assert out.out == "a\nb\n" and "is gone" in out.err and "kept by the operator" in out.err
    assert attempt_log(cluster, logs_args(attempt=2, tail=1), job(3, {1: "a\nb\n", 2: "c\nd\n"})) == 0
    out = capsys.readouterr()
    assert out.out == "d\n" and "is unreadable" in out.err
    with pytest.raises(CliError, match=r"^read log of pod pong-head-2: 500 node gone$"):
        attempt_log(cluster, logs_args(attempt=2), job(3))  # nothing kept: the pod's own error


def test_an_attempt_without_a_log_lists_the_attempts_that_have_one() -> None:
    cluster: Any = FakeCluster(FakeCore({"pong-head-2": 2, "pong-head-3": 3}, {}))
    with pytest.raises(CliError) as err:
        attempt_log(cluster, logs_args(attempt=7), job(3, {1: "x\n"}))
    assert str(err.value) == ("rltrainingjob pong has no attempt 7 (it has had 3); driver logs of attempts: "
                              "1 (tail kept in status), 2 (pod pong-head-2), 3 (pod pong-head-3)")
    cluster = FakeCluster(FakeCore({}, {}))
    with pytest.raises(CliError) as err:
        attempt_log(cluster, logs_args(attempt=1), job(2))
    assert str(err.value) == ("the driver log of attempt 1 of pong is gone (its head pod and the tail kept in status); "
                              "driver logs of attempts: none")


def test_no_attempt_log_messages() -> None:
    assert no_attempt_log("pong", 0, None, {}, {}) == "rltrainingjob pong has no attempt 0 (it has had 0); driver logs of attempts: none"


def test_tail_of_a_kept_text_as_the_api_server_cuts_a_log() -> None:
    assert last_lines("a\nb\nc\n", None) == "a\nb\nc\n"
    assert last_lines("a\nb\nc\n", 2) == "b\nc\n"
    assert last_lines("a\nb\nc", 1) == "c"
    assert last_lines("a\n", 0) == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["--dest", "x"], "logs: --dest goes with --ray"),
    (["--ray", "--attempt", "1"], "logs: --ray copies whole files of every pod; --attempt, --follow and --tail are the driver log's"),
    (["--ray", "-f"], "logs: --ray copies whole files of every pod; --attempt, --follow and --tail are the driver log's"),
])
def test_flags_that_do_not_go_together_are_refused_before_the_cluster_is_asked(argv: list[str], message: str) -> None:
    args = build_parser().parse_args(["logs", "pong", *argv])
    with pytest.raises(CliError) as err:
        logs_cmd(None, args)  # type: ignore[arg-type]
    assert str(err.value) == message
