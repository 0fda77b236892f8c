"""The operator reads each running head's progress, and what came with that change, against a real API server.

A job's head holds no credentials: the operator GETs http://<head pod IP>:9400/progress and writes status.progress.
On the test control plane the pods run on kwok's fake nodes, whose pod IPs are loopback addresses (127.244.0.0/16),
so a test plays a head's driver by serving HTTP on (that IP, 9400) here (FakeHead): a valid record, or whatever a
hostile or broken driver could answer.

One operator serves this module, reading the heads every 0.5 s (`--progress-interval 0.5`) instead of the default
10 s; the session's operator is stopped meanwhile (two operators without leader election would act side by side).
The tests that restart it (a stricter flag, children deleted while it is down, the upgrade) start it again.

Also here: a job refused after it started is torn down, kept children deleted while no operator ran come back, a
successful finish warns of nothing, a leader whose Lease renewal hangs stops writing before a standby takes over
(in-process, two LeaderElectors on the API server), and an upgrade from the previous version (git commit PREVIOUS,
run from a worktree) with a job running: the job goes on, and its driver identity goes once its old head is done.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from rljob.api import constants as c
from rljob.api.models import JobStatus
from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane, KubectlError, wait_for
from tests.cluster.operator_process import OperatorProcess, rljob_executable
from tests.integration.jobs import get_job, log_since, run_to, status, wait_phase
from tests.tooling import ROOT

FAST = ("--progress-interval", "0.5")
TINY = {"cpu": "100m", "memory": "256Mi", "shmSize": "64Mi"}
# The version before the operator read progress from the heads: its drivers patched their jobs' status themselves,
# as their jobs' own ServiceAccount (NAME-driver, Role and RoleBinding NAME-progress-reporter).
PREVIOUS = "ee8ccfa"


def tiny_job(name: str, namespace: str, workers: int = 1, **spec: Any) -> dict[str, Any]:
    return small_job(name, namespace, head=dict(TINY), workers={"replicas": workers, **TINY}, **spec)


def progress(cp: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    return status(cp, ns, name).get("progress")


def head_ip(cp: ControlPlane, ns: str, pod: str) -> str:
    return wait_for(lambda: (cp.get_json("pod", pod, "-n", ns).get("status") or {}).get("podIP"), timeout=30,
                    interval=0.2, ignore=(KubectlError,), description=f"{ns}/{pod}'s IP")


def job_events(cp: ControlPlane, ns: str, name: str) -> list[dict[str, Any]]:
    return cp.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]


def exists(cp: ControlPlane, kind: str, name: str, ns: str) -> bool:
    return cp.kubectl("get", kind, name, "-n", ns, "--ignore-not-found", "-o", "name").stdout.strip() != ""


def record(**fields: Any) -> dict[str, Any]:
    base = {"attempt": 1, "updateTime": "2026-12-07T06:00:00Z"}
    return {**base, **fields}


# ── a head's driver, played here ─────────────────────────────────────────────────────────────────────

Answer = Callable[[BaseHTTPRequestHandler, "FakeHead", int], None]


class FakeHead:
    """Serves GET /progress on (ip, 9400) with `answer` (which may be swapped while it serves) and counts the asks.

    `asked` counts every GET of /progress; `asked_since_set` those since the last :meth:`set`, and `witnessed` is
    the `witness` head's `asked` at the first of them: what another head had served when this one was first asked.
    `held` are the connections a slow answer holds (until the operator hangs up), and `asked_while_held` counts the
    asks this head had while the `during` head held one that the operator had not closed yet."""

    def __init__(self, ip: str, answer: Answer, witness: FakeHead | None = None) -> None:
        self.ip, self.answer, self.witness = ip, answer, witness
        self.asked = self.asked_since_set = self.asked_while_held = 0
        self.held: set[socket.socket] = set()
        self.witnessed: int | None = None
        self.during: FakeHead | None = None
        self.lock = threading.Lock()
        self.closing = threading.Event()
        head = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # (http.server's name)
                if self.path != c.PROGRESS_PATH:
                    self.send_error(404)
                    return
                with head.lock:
                    head.asked += 1
                    head.asked_since_set += 1
                    if head.asked_since_set == 1 and head.witness is not None:
                        head.witnessed = head.witness.asked
                    if head.during is not None and head.during.holds_open():
                        head.asked_while_held += 1
                    answer, n = head.answer, head.asked
                with contextlib.suppress(OSError):  # the operator hung up (a huge or slow answer): as it should
                    answer(self, head, n)

            def log_message(self, *_: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

        self.server = Server((ip, c.PORT_METRICS), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def holds_open(self) -> bool:
        """Whether a slow answer's connection is open at the operator's end too. The operator closes a connection
        before it sends its next request (on loopback the close is delivered first): a request that arrives while
        this is True was sent while the operator waited for the slow answer."""
        with self.lock:
            held = list(self.held)
        for conn in held:
            with contextlib.suppress(OSError):
                readable, _, _ = select.select([conn], [], [], 0)
                if not readable or conn.recv(1, socket.MSG_PEEK):
                    return True
        return False

    def set(self, answer: Answer) -> None:
        with self.lock:
            self.answer, self.asked_since_set, self.witnessed = answer, 0, None

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeHead:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def send(handler: BaseHTTPRequestHandler, body: bytes, code: int = 200, headers: dict[str, str] | None = None) -> None:
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def serves(rec: dict[str, Any] | Callable[[int], dict[str, Any]]) -> Answer:
    """A valid answer: the record, or the record for the n-th ask."""
    return lambda h, _, n: send(h, json.dumps(rec(n) if callable(rec) else rec).encode())


def raw(body: bytes, code: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return lambda h, _, __: send(h, body, code, headers)


def huge(declared: bool) -> Answer:
    """10 MB of a JSON string, its length declared (Content-Length) or not (read until the connection closes)."""
    size, chunk = 10 * 1024 * 1024, b"9" * 65536

    def answer(h: BaseHTTPRequestHandler, _: FakeHead, __: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if declared:
            h.send_header("Content-Length", str(size))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        h.wfile.write(b'{"lastCheckpoint": "')
        for _ in range(size // len(chunk)):
            h.wfile.write(chunk)
    return answer


def slow(h: BaseHTTPRequestHandler, head: FakeHead, _: int) -> None:
    """Starts a valid answer, then holds the connection until the operator hangs up (its 2 s timeout)."""
    body = json.dumps(record(iteration=99, episodeReturnMean=20.0)).encode()
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body[:10])
    h.wfile.flush()
    with head.lock:
        head.held.add(h.connection)
    try:
        while not head.closing.is_set():
            readable, _, _ = select.select([h.connection], [], [], 0.05)
            if readable and not h.connection.recv(4096):
                break  # the operator hung up
    finally:
        with head.lock:
            head.held.discard(h.connection)


# ── the operator of this module ──────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def reader(control_plane: ControlPlane, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """`rljob operator --progress-interval 0.5`, in place of the session's operator while this module runs."""
    operator.stop()
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("progress-operator") / "operator.log", FAST)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        operator.start()


@pytest.fixture
def fast(reader: OperatorProcess) -> Iterator[OperatorProcess]:
    """The module's operator, running; its log during the test is shown when the test fails."""
    yield from reader.running_with_log()


# ── reading progress ─────────────────────────────────────────────────────────────────────────────────


def test_a_heads_progress_is_written_to_the_status(control_plane: ControlPlane, fast: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, tiny_job("learner", namespace))
    rec = record(iteration=12, episodeReturnMean=-17.25, envSteps=48000, envStepsPerSecond=812.5, timeTotalSeconds=61.5,
                 lastCheckpoint="/checkpoints/learner/checkpoint_000012")
    with FakeHead(head_ip(cp, namespace, "learner-head-1"), serves(rec)) as head:
        wait_for(lambda: progress(cp, namespace, "learner") == rec, timeout=30, interval=0.3,
                 description="status.progress is the head's record")
        assert head.asked >= 1
    table = cp.kubectl("get", "rltj", "learner", "-n", namespace).stdout.splitlines()
    row = dict(zip(table[0].split(), table[1].split(), strict=True))
    assert (row["ITERATION"], row["REWARD"], row["PHASE"]) == ("12", "-17.25", "Running"), table
    assert JobStatus.model_validate(status(cp, namespace, "learner")).progress is not None


HOSTILE: list[tuple[str, Answer]] = [
    ("not JSON", raw(b"<html><body>It works!</body></html>", headers={"Content-Type": "text/html"})),
    ("truncated JSON", raw(b'{"iteration": 9, "episodeReturnMean": ')),
    ("a JSON list", raw(b"[1, 2, 3]")),
    ("10 MB, declared", huge(declared=True)),
    ("10 MB, streamed", huge(declared=False)),
    ("slow", slow),
    ("iteration -1", serves(record(iteration=-1, episodeReturnMean=1.0))),
    ("episodeReturnMean 1e300", serves(record(iteration=9, episodeReturnMean=1e300))),
    ("NaN", raw(b'{"iteration": 9, "episodeReturnMean": NaN}')),
    ("a string for a number", serves(record(iteration="9", episodeReturnMean=1.0))),
    ("a float for an integer", serves(record(iteration=9.5))),
    ("lastCheckpoint of 5000 characters", serves(record(iteration=9, lastCheckpoint="/c/" + "x" * 4997))),
    ("updateTime no time", serves(record(iteration=9, updateTime="yesterday"))),
    ("updateTime a date only", serves(record(iteration=9, updateTime="2026-12-07"))),
    ("HTTP 500 with a record", raw(json.dumps(record(iteration=9)).encode(), code=500)),
    ("a redirect", raw(b"", code=302, headers={"Location": "http://127.0.0.1:1/progress"})),
]


def test_a_hostile_head_changes_nothing_and_holds_up_no_other_job(
        control_plane: ControlPlane, fast: OperatorProcess, namespace: str) -> None:
    """Garbage, 10 MB, a slow answer, figures out of range or of the wrong type: the hostile job's status keeps its
    last valid record, while the operator keeps reading another job's head and starting new jobs."""
    cp = control_plane
    run_to(cp, namespace, tiny_job("steady", namespace, workers=0))
    run_to(cp, namespace, tiny_job("hostile", namespace, workers=0))
    mark = fast.log_path.stat().st_size
    valid = record(iteration=3, episodeReturnMean=-20.0, envSteps=3000)
    with FakeHead(head_ip(cp, namespace, "steady-head-1"), serves(lambda n: record(iteration=n))) as steady, \
            FakeHead(head_ip(cp, namespace, "hostile-head-1"), serves(valid), witness=steady) as hostile:
        steady.during = hostile
        wait_for(lambda: progress(cp, namespace, "hostile") == valid, timeout=30, interval=0.3,
                 description="the hostile head's one valid record written")
        for i, (what, answer) in enumerate(HOSTILE):
            hostile.set(answer)
            newcomer = f"new-{i}"
            cp.apply(tiny_job(newcomer, namespace, workers=0))

            def proof(answer: Answer = answer) -> bool:
                # The hostile head was asked (twice: once more after the operator had its answer), and the steady
                # job's progress went past what its head had served by the hostile head's first ask in this mode.
                # A slow answer's connection must not hold the others up: the steady head is asked while it is open.
                seen = (progress(cp, namespace, "steady") or {}).get("iteration", 0)
                held = answer is not slow or steady.asked_while_held > 0
                return hostile.asked_since_set >= 2 and hostile.witnessed is not None and seen > hostile.witnessed and held
            try:
                wait_for(proof, timeout=30, interval=0.3)
            except TimeoutError:
                raise AssertionError(f"{what}: the operator stopped reading the other head (hostile asked "
                                     f"{hostile.asked_since_set} times; steady asked {steady.asked_while_held} times "
                                     f"while a slow answer was held; steady's progress "
                                     f"{progress(cp, namespace, 'steady')}, its head asked {steady.asked} times, "
                                     f"{hostile.witnessed} by the hostile head's first ask)") from None
            assert progress(cp, namespace, "hostile") == valid, what
            st = wait_for(lambda n=newcomer: status(cp, namespace, n).get("phase") in ("Initializing", "Running"),
                          timeout=30, interval=0.3, description=f"{newcomer}, created during '{what}', started")
            assert st
            assert fast.alive(), f"{what}: the operator exited:\n{fast.log_tail()}"
        # Still read: a valid record after all that is taken.
        hostile.set(serves(record(iteration=4, episodeReturnMean=-19.0, envSteps=4000)))
        wait_for(lambda: (progress(cp, namespace, "hostile") or {}).get("iteration") == 4, timeout=30, interval=0.3,
                 description="the hostile head's next valid record written")
    st = status(cp, namespace, "hostile")
    JobStatus.model_validate(st)
    assert st["phase"] == "Running" and st["attempts"] == 1
    # Nothing the operator read from a head was refused by the API server: all bad answers were caught before a write.
    log = log_since(fast, mark)
    refused = [line for line in log.splitlines() if "progress of" in line and "hostile" in line]
    assert refused == [], "\n".join(refused[:5])
    assert "unexpected error" not in log and "Traceback" not in log, log[-5000:]


def test_counters_never_go_backwards(control_plane: ControlPlane, fast: OperatorProcess, namespace: str) -> None:
    """A head that reports iteration 10, then 5 (a retry resumed from an older checkpoint): the status keeps 10 and
    the env steps, but takes the new return and the figures that may go down."""
    cp = control_plane
    run_to(cp, namespace, tiny_job("resumed", namespace, workers=0))
    first = record(iteration=10, episodeReturnMean=5.0, envSteps=10000, envStepsPerSecond=900.0, timeTotalSeconds=100.0)
    with FakeHead(head_ip(cp, namespace, "resumed-head-1"), serves(first)) as head:
        wait_for(lambda: progress(cp, namespace, "resumed") == first, timeout=30, interval=0.3, description="10 written")
        head.set(serves(record(iteration=5, episodeReturnMean=7.5, envSteps=5000, envStepsPerSecond=450.0,
                               timeTotalSeconds=50.0, lastCheckpoint="/checkpoints/resumed/checkpoint_000005")))
        got = wait_for(lambda: (p := progress(cp, namespace, "resumed") or {}).get("episodeReturnMean") == 7.5 and p,
                       timeout=30, interval=0.3, description="the resumed head's return written")
    assert got == record(iteration=10, episodeReturnMean=7.5, envSteps=10000, envStepsPerSecond=450.0,
                         timeTotalSeconds=100.0, lastCheckpoint="/checkpoints/resumed/checkpoint_000005"), got


def test_a_finished_heads_last_record_is_written(control_plane: ControlPlane, fast: OperatorProcess, namespace: str) -> None:
    """The driver leaves its last record as the head container's termination message; the operator writes it once
    the head has finished (nothing serves the head's port by then: the record can only come from the pod)."""
    cp = control_plane
    run_to(cp, namespace, tiny_job("done", namespace, workers=0))
    early = record(iteration=3, episodeReturnMean=-10.0, envSteps=3000, lastCheckpoint="/checkpoints/done/checkpoint_000003")
    with FakeHead(head_ip(cp, namespace, "done-head-1"), serves(early)):
        wait_for(lambda: progress(cp, namespace, "done") == early, timeout=30, interval=0.3, description="read while running")
    last = record(iteration=4, episodeReturnMean=18.5, envSteps=4000, timeTotalSeconds=40.0,
                  updateTime="2026-12-07T06:10:00.123456Z")
    cp.set_pod_phase(namespace, "done-head-1", "Succeeded", exit_code=0,
                     message=json.dumps({c.TERMINATION_PROGRESS_KEY: last}))
    message = cp.get_json("pod", "done-head-1", "-n", namespace)["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert json.loads(message) == {c.TERMINATION_PROGRESS_KEY: last}  # (what kwok wrote, as a kubelet would)
    wait_phase(cp, namespace, "done", "Succeeded", 30)
    got = wait_for(lambda: (p := progress(cp, namespace, "done") or {}).get("iteration") == 4 and p, timeout=30,
                   interval=0.3, description="the termination message's record written")
    assert got == {**last, "lastCheckpoint": early["lastCheckpoint"]}  # a figure the last record lacks is kept


# ── a stricter operator, children deleted while it was down, a quiet success ────────────────────────────


def test_a_job_refused_after_it_started_is_torn_down(
        control_plane: ControlPlane, fast: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    """A job without network isolation runs; the operator comes back with --require-network-isolation: the job is
    Failed/NetworkIsolationRequired, and its head pod and worker StatefulSet are deleted."""
    cp = control_plane
    run_to(cp, namespace, tiny_job("open", namespace, workers=1, network={"isolation": False}))
    assert exists(cp, "statefulset", "open-workers", namespace) and exists(cp, "pod", "open-head-1", namespace)
    fast.stop()
    strict = OperatorProcess(cp.kubeconfig, tmp_path / "strict.log", (*FAST, "--require-network-isolation"))
    try:
        strict.start()
        st = wait_phase(cp, namespace, "open", "Failed", 30, reason="NetworkIsolationRequired")
        assert "--require-network-isolation" in st["message"]
        assert {x["type"]: x["status"] for x in st["conditions"]}["Failed"] == "True"
        wait_for(lambda: not exists(cp, "pod", "open-head-1", namespace) and not exists(cp, "statefulset", "open-workers", namespace)
                 and not cp.get_json("pods", "-n", namespace, "-l", f"{c.LABEL_JOB}=open")["items"],
                 timeout=60, interval=0.3, description="the head pod, the StatefulSet and its pods deleted")
        reasons = [(e["type"], e["reason"]) for e in job_events(cp, namespace, "open")]
        assert ("Warning", "NetworkIsolationRequired") in reasons
        assert status(cp, namespace, "open")["phase"] == "Failed"
    finally:
        strict.stop()
        print("----- strict operator -----\n" + strict.log_tail(100))
        fast.start()


def test_kept_children_deleted_while_no_operator_ran_come_back(
        control_plane: ControlPlane, fast: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, tiny_job("kept", namespace, workers=1))
    removed = {"networkpolicy": "kept-isolation", "service": "kept-head"}
    uids = {kind: cp.get_json(kind, name, "-n", namespace)["metadata"]["uid"] for kind, name in removed.items()}
    fast.stop()
    try:
        for kind, name in removed.items():
            cp.kubectl("delete", kind, name, "-n", namespace, "--wait=true")
        assert not any(exists(cp, kind, name, namespace) for kind, name in removed.items())
    finally:
        fast.start()

    def back() -> bool:
        for kind, name in removed.items():
            obj = cp.kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "json").stdout
            if not obj or json.loads(obj)["metadata"]["uid"] == uids[kind]:
                return False
        return True
    wait_for(back, timeout=30, interval=0.3, description="the policy and the Service created again")
    policy = cp.get_json("networkpolicy", "kept-isolation", "-n", namespace)
    job_uid = get_job(cp, namespace, "kept")["metadata"]["uid"]
    assert [r["uid"] for r in policy["metadata"]["ownerReferences"]] == [job_uid]
    wait_for(lambda: ("Warning", "ChildrenRestored") in [(e["type"], e["reason"]) for e in job_events(cp, namespace, "kept")],
             timeout=15, interval=0.3, description="a ChildrenRestored warning")
    restored = next(e for e in job_events(cp, namespace, "kept") if e["reason"] == "ChildrenRestored")
    assert "kept-isolation" in restored["message"] and "kept-head" in restored["message"], restored["message"]
    assert status(cp, namespace, "kept")["phase"] == "Running"


def test_a_successful_finish_warns_of_nothing(control_plane: ControlPlane, fast: OperatorProcess, namespace: str) -> None:
    """The head's Ray stops as its driver finishes: the workers lose it and are not ready before the head pod is seen
    Succeeded. The job is WorkersNotReady meanwhile, then Succeeded: no ClusterDegraded, no warning at all."""
    cp = control_plane
    run_to(cp, namespace, tiny_job("quiet", namespace, workers=2))
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                                           {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"}]}}
    for pod in ("quiet-workers-0", "quiet-workers-1"):  # (kwok readies Pending pods only: these stay not ready)
        cp.kubectl("patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=strategic", "-p", json.dumps(not_ready))
    st = wait_for(lambda: (s := status(cp, namespace, "quiet")).get("workers") == "0/2" and s, timeout=30, interval=0.3,
                  description="the workers seen not ready")
    ready = next(x for x in st["conditions"] if x["type"] == "ClusterReady")
    assert (st["phase"], ready["status"], ready["reason"]) == ("Running", "False", "WorkersNotReady"), st
    cp.set_pod_phase(namespace, "quiet-head-1", "Succeeded", exit_code=0)
    wait_phase(cp, namespace, "quiet", "Succeeded", 30)
    # Events are posted after the status write that they describe, one decision at a time: once Succeeded's is there,
    # a warning decided before it would be there too.
    wait_for(lambda: "Succeeded" in [e["reason"] for e in job_events(cp, namespace, "quiet")], timeout=15, interval=0.3,
             description="the Succeeded event")
    warnings = [(e["reason"], e["message"]) for e in job_events(cp, namespace, "quiet") if e["type"] != "Normal"]
    assert warnings == []
    st = status(cp, namespace, "quiet")
    assert not [x for x in st["conditions"] if x.get("reason") == "ClusterDegraded"], st["conditions"]


# ── leader election: no write once the Lease may be lost ───────────────────────────────────────────────


def test_a_leader_whose_renewal_hangs_writes_nothing_once_its_lease_may_be_lost(control_plane: ControlPlane, namespace: str) -> None:
    """Two LeaderElectors on the real API server (lease 3 s, renew deadline 2 s, retry 0.5 s, write margin 1 s).
    The leader's renewal hangs (its PUT of the Lease waits 6 s before it is sent); the standby takes the Lease. The
    old leader's writes through its Kube are refused before they are sent (NotLeading) from renew deadline - margin
    on, while it still counts as leading, and what it tried to create does not exist; before, its writes go through."""
    from rljob.controller import credentials
    from rljob.controller.kube import Kube, NotLeading
    from rljob.controller.leader import LeaderElector, LeaseSettings

    creds = credentials.load(str(control_plane.kubeconfig))

    def settings(identity: str) -> LeaseSettings:
        return LeaseSettings(name="hang", namespace=namespace, identity=identity, lease_seconds=3.0,
                             renew_deadline_seconds=2.0, retry_seconds=0.5, write_margin_seconds=1.0)

    def config_map(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": {}}

    async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        a_kube, b_kube = Kube(creds), Kube(creds)
        a, b = LeaderElector(a_kube, settings("a")), LeaderElector(b_kube, settings("b"))
        a_kube.may_write, b_kube.may_write = a.may_write, b.may_write
        tasks: list[asyncio.Task[Any]] = []
        try:
            await a.acquire()
            lost = asyncio.Event()
            tasks.append(asyncio.create_task(a.keep(on_lost=lost.set)))
            standby = asyncio.create_task(b.acquire())
            tasks.append(standby)
            assert await a_kube.create(config_map("while-leading")) == (None, True)  # leading with margin: sent

            hung = asyncio.Event()
            request = a_kube.request

            async def slow_request(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
                if method == "PUT" and path.startswith(a.path):
                    hung.set()
                    await asyncio.sleep(6)
                return await request(method, path, *args, **kwargs)

            a_kube.request = slow_request  # type: ignore[method-assign]
            await asyncio.wait_for(hung.wait(), 10)
            await until(lambda: not a.may_write(), "the old leader's write margin to run out")
            assert a.is_leader(), "the write margin left no time between the last write and the renew deadline"
            with pytest.raises(NotLeading):
                await a_kube.create(config_map("past-the-margin"))
            assert not standby.done(), "the standby took the Lease before the old leader stopped writing"
            await asyncio.wait_for(standby, 20)
            assert b.may_write() and not a.may_write()
            with pytest.raises(NotLeading):
                await a_kube.create(config_map("after-the-takeover"))
            with pytest.raises(NotLeading):
                await a_kube.delete("v1", "ConfigMap", namespace, "while-leading")
            await asyncio.wait_for(lost.wait(), 10)  # the old leader gave the hung renewal up and stopped
            assert not a.is_leader()
            assert await b_kube.create(config_map("by-the-new-leader")) == (None, True)
            lease = await b_kube.request("GET", f"{b.path}/hang")
            assert lease["spec"]["holderIdentity"] == "b"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await a_kube.close()
            await b_kube.close()

    asyncio.run(scenario())
    present = {o["metadata"]["name"] for o in control_plane.get_json("configmaps", "-n", namespace)["items"]}
    assert {"while-leading", "by-the-new-leader"} <= present
    assert not {"past-the-margin", "after-the-takeover"} & present


# ── upgrade from the previous version, a job running ──────────────────────────────────────────────────


@pytest.fixture(scope="module")
def previous_version(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The previous version's tree (a git worktree at PREVIOUS): its `rljob` package under operator/."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"], capture_output=True).returncode:
        pytest.fail(f"commit {PREVIOUS} (the previous version) is not in this clone: fetch the history "
                    "(git fetch --unshallow)", pytrace=False)
    where = tmp_path_factory.mktemp("previous") / "rljob"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), PREVIOUS], check=True,
                   capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], capture_output=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def previous_rljob(tree: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "operator")}
    res = subprocess.run([rljob_executable(), *args], capture_output=True, text=True, env=env, cwd=tree, timeout=120,
                         check=False)
    assert res.returncode == 0, f"the previous version's `rljob {' '.join(args)}` failed: {res.stderr}"
    return res.stdout


@contextlib.contextmanager
def python_path(path: Path) -> Iterator[None]:
    """The `rljob` entry point of this environment imports the package from `path` (PYTHONPATH precedes the
    editable install's path)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(path)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def test_upgrade_from_the_previous_version_with_a_job_running(
        control_plane: ControlPlane, fast: OperatorProcess, namespace: str, previous_version: Path, tmp_path: Path) -> None:
    """The previous operator runs a job (its head as the job's ServiceAccount NAME-driver, with a Role and RoleBinding
    NAME-progress-reporter and a head policy with API-server egress); the new CRD and operator replace them. The job
    runs on (same attempt, same head), its identity stays while that head runs; once it has finished, the identity
    goes and the head policy has no egress."""
    cp = control_plane
    from rljob.api.crd import crd_yaml

    old_crd = previous_rljob(previous_version, "crd")
    policy = list(yaml.safe_load_all(previous_rljob(previous_version, "crd", "--policy")))
    assert {o["kind"] for o in policy} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    name = "legacy"
    identity = {"serviceaccount": f"{name}-driver", "role": f"{name}-progress-reporter", "rolebinding": f"{name}-progress-reporter"}
    fast.stop()
    old = OperatorProcess(cp.kubeconfig, tmp_path / "previous-operator.log", ("--namespace", namespace))
    try:
        # As the previous version's tests installed it: its CRD, and its driver policy (client-side).
        cp.apply(old_crd)
        cp.kubectl("apply", "-f", "-", input=policy)
        cp.wait_established(c.CRD_NAME)
        with python_path(previous_version / "operator"):
            old.start()
        st = run_to(cp, namespace, tiny_job(name, namespace, workers=1), timeout=60)
        assert st["attempts"] == 1
        assert "ServiceAccount" in old.log_tail(400), "not the previous version running: " + old.log_tail(40)
        for kind, obj in identity.items():
            assert exists(cp, kind, obj, namespace), f"the previous version made no {kind} {obj}"
        head = cp.get_json("pod", f"{name}-head-1", "-n", namespace)
        assert head["spec"]["serviceAccountName"] == f"{name}-driver"
        head_policy = cp.get_json("networkpolicy", f"{name}-head", "-n", namespace)["spec"]
        assert head_policy.get("egress") and "Egress" in head_policy["policyTypes"]
        old.stop()

        cp.apply(crd_yaml())
        cp.wait_established(c.CRD_NAME)
        # The new schema's bounds (date-time formats, lengths) accept the previous version's status: written whole
        # to a job whose status was empty, every field of it is validated (none is exempt as unchanged).
        old_status = status(cp, namespace, name)
        cp.apply(tiny_job("copy", namespace, suspend=True))
        cp.kubectl("patch", "rltj", "copy", "-n", namespace, "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": old_status}))
        assert status(cp, namespace, "copy") == old_status
        cp.kubectl("delete", "rltj", "copy", "-n", namespace)
        mark = fast.log_path.stat().st_size
        fast.start()
        # The new operator leads and reads the old head's progress as any head's (the old driver would have
        # patched it itself; here the head serves it): proof that it acts on the job, through the new schema.
        rec = record(iteration=21, episodeReturnMean=-5.5, envSteps=21000)
        with FakeHead(head_ip(cp, namespace, f"{name}-head-1"), serves(rec)):
            wait_for(lambda: progress(cp, namespace, name) == rec, timeout=30, interval=0.3, description="progress read")
        wait_for(lambda: "upgrade: 1 job(s) still have" in log_since(fast, mark), timeout=30, interval=0.3,
                 description="the new operator's upgrade scan")
        st = status(cp, namespace, name)
        assert (st["phase"], st["attempts"]) == ("Running", 1), st
        assert cp.get_json("pod", f"{name}-head-1", "-n", namespace)["metadata"]["uid"] == head["metadata"]["uid"]
        # The old head still runs as NAME-driver: its identity and egress stay.
        for kind, obj in identity.items():
            assert exists(cp, kind, obj, namespace), f"{kind} {obj} deleted while the old head runs"
        assert cp.get_json("networkpolicy", f"{name}-head", "-n", namespace)["spec"].get("egress")

        cp.set_pod_phase(namespace, f"{name}-head-1", "Succeeded", exit_code=0)
        wait_phase(cp, namespace, name, "Succeeded", 30)
        wait_for(lambda: not any(exists(cp, kind, obj, namespace) for kind, obj in identity.items()), timeout=30,
                 interval=0.3, description="the previous version's driver identity deleted")
        head_policy = wait_for(lambda: (p := cp.get_json("networkpolicy", f"{name}-head", "-n", namespace)["spec"])
                               .get("policyTypes") == ["Ingress"] and p, timeout=30, interval=0.3,
                               description="the head policy without egress")
        assert not head_policy.get("egress") and head_policy.get("ingress"), head_policy
        assert "upgrade: " + f"{namespace}/{name} no longer has" in log_since(fast, mark)
        assert progress(cp, namespace, name) == rec
    finally:
        old.stop()
        print("----- previous operator -----\n" + old.log_tail(100))
        for obj in policy:
            cp.kubectl("delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", check=False)
        cp.apply(crd_yaml())
        cp.wait_established(c.CRD_NAME)
        if not fast.alive():
            fast.start()

