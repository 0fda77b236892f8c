"""`rljob dashboard` and `rljob tensorboard`: the forwarder's listeners and its routing to the current head pod
(with local servers as the pods' ports), and the copy of the event files out of the head pod (the pod's side runs
here in a real interpreter, through a stand-in kubectl)."""
from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rljob.api import constants as c
from rljob.cli.cluster import CliError
from rljob.cli.forward import (
    NO_EVENTS_YET,
    PACK_SCRIPT,
    TENSORBOARD_DIR,
    ForwardedPort,
    Forwarder,
    HeadRoute,
    NoHead,
    dashboard_ports,
    exec_command,
    exec_status,
    fetch_events,
    live_head_pod,
    unpack_archive,
)
from tests.builders import minimal_job
from tests.fake_pods import ask, fake_pods


def cli_args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"kubeconfig": None, "context": None, "namespace": None, **kw})


def job(phase: str | None, head_pod: str | None = "pong-head-1") -> dict[str, Any]:
    """The job in `phase` (none: not yet seen by the operator), its head pod `head_pod`."""
    return minimal_job("pong", status={k: v for k, v in (("phase", phase), ("headPod", head_pod)) if v})


@pytest.mark.parametrize("phase", ["Initializing", "Running"])
def test_a_live_job_has_a_head_pod_to_reach(phase: str) -> None:
    assert live_head_pod(job(phase), "the Ray dashboard") == "pong-head-1"


@pytest.mark.parametrize(("phase", "head_pod"), [(None, None), ("Pending", None), ("Running", None), ("Suspended", None),
                                                 ("Succeeded", "pong-head-1"), ("Failed", "pong-head-2")])
def test_other_jobs_are_refused_with_the_reason(phase: str | None, head_pod: str | None) -> None:
    with pytest.raises(CliError) as err:
        live_head_pod(job(phase, head_pod), "the Ray dashboard")
    assert str(err.value) == (f"rltrainingjob pong is {phase or 'Pending'}: the Ray dashboard runs in its head pod, "
                              "which is up only while the job is Initializing or Running")


def test_the_tensorboard_folder_is_the_drivers() -> None:
    pytest.importorskip("ray")
    from rljob.trainer.driver import TENSORBOARD_DIR as DRIVER_DIR

    assert TENSORBOARD_DIR == DRIVER_DIR


def events_folder(root: Path) -> Path:
    folder = root / TENSORBOARD_DIR
    (folder / "run").mkdir(parents=True)
    (folder / "events.out.tfevents.1.head").write_bytes(b"\x00\x01binary event")
    (folder / "run" / "events.out.tfevents.2.head").write_bytes(b"more")
    return folder


def test_pack_script_and_unpack_round_trip(tmp_path: Path) -> None:
    folder = events_folder(tmp_path / "pod")
    packed = subprocess.run([sys.executable, "-c", PACK_SCRIPT, str(folder)], capture_output=True, text=True, check=True)
    out = tmp_path / "here"
    assert unpack_archive(base64.b64decode(packed.stdout), out) == 2
    assert (out / "events.out.tfevents.1.head").read_bytes() == b"\x00\x01binary event"
    assert (out / "run" / "events.out.tfevents.2.head").read_bytes() == b"more"
    # Before the first iteration there is no folder: a distinct exit code, not an error.
    missing = subprocess.run([sys.executable, "-c", PACK_SCRIPT, str(tmp_path / "nothing")], capture_output=True)
    assert missing.returncode == NO_EVENTS_YET


def test_unpack_refuses_paths_outside_the_logdir(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(CliError, match="would land outside"):
        unpack_archive(buf.getvalue(), tmp_path / "logdir")
    assert not (tmp_path / "escaped").exists()


# A stand-in for kubectl: records its arguments; `exec` runs the command after `--` here, with the pod's checkpoint
# mount mapped to a local folder.
FAKE_KUBECTL = f"""#!{sys.executable}
import json, os, subprocess, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1] == "exec" and os.environ.get("FAKE_EXIT"):
    sys.exit(print('error: unable to upgrade connection: container not found ("ray-head")', file=sys.stderr) or 1)
if sys.argv[1] == "exec":
    cmd = sys.argv[sys.argv.index("--") + 1:]
    cmd = [sys.executable] + cmd[1:-1] + [cmd[-1].replace("{c.CHECKPOINT_MOUNT}", os.environ["FAKE_ROOT"])]
    sys.exit(subprocess.run(cmd).returncode)
sys.exit(2)
"""


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "kubectl.log"))
    monkeypatch.setenv("FAKE_ROOT", str(tmp_path / "pod"))
    return tmp_path / "kubectl.log"


def logged(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_fetch_events_through_kubectl_exec(fake_kubectl: Path, tmp_path: Path) -> None:
    cluster: Any = SimpleNamespace(namespace="team-a")
    args = cli_args(context="prod")
    assert fetch_events(cluster, args, "pong-head-1") is None  # nothing written yet
    events_folder(tmp_path / "pod")
    archive = fetch_events(cluster, args, "pong-head-1")
    assert archive is not None and unpack_archive(archive, tmp_path / "copy") == 2
    expected = exec_command("kubectl", args, "team-a", "pong-head-1", f"{c.CHECKPOINT_MOUNT}/{TENSORBOARD_DIR}")
    assert logged(fake_kubectl)[-1] == expected[1:]
    assert expected[expected.index("-c") + 1] == c.CONTAINER_NAME_HEAD


def test_fetch_events_reports_a_failed_exec(fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EXIT", "1")
    with pytest.raises(CliError) as err:
        fetch_events(SimpleNamespace(namespace="ns"), cli_args(), "pong-head-1")  # type: ignore[arg-type]
    assert str(err.value) == 'copy from pod pong-head-1: error: unable to upgrade connection: container not found ("ray-head")'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"metadata":{},"status":"Success"}', (0, "")),
        ('{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3",'
         '"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}', (3, "exit code 3")),
        ('{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: '
         'no exec found for container \\"ray-head\\"","reason":"InternalError","details":{"causes":[{"message":"no exec"}]}}',
         (None, 'Internal error occurred: error executing command in container: no exec found for container "ray-head"')),
        ("", (None, "the exec ended without a status")),
        ("not json\n at all", (None, "not json at all")),
    ],
)
def test_exec_status_tells_an_exit_code_from_a_command_that_never_ran(text: str, expected: tuple[int | None, str]) -> None:
    assert exec_status(text) == expected


# ── dashboard ────────────────────────────────────────────────────────────────────────────────────────────────


def test_the_dashboard_forwards_the_dashboard_and_the_ray_client_port() -> None:
    ports = dashboard_ports(18265, 0)
    assert [(p.remote, p.local, p.flag) for p in ports] == [(c.PORT_DASHBOARD, 18265, "--port"), (c.PORT_CLIENT, 0, "--client-port")]
    assert [p.url for p in ports] == ["http://localhost:18265", "ray://localhost:0"]
    assert [p.label for p in ports] == ["Ray dashboard", "Ray client"]
    assert ForwardedPort(c.PORT_CLIENT, 10001, "ray", "--client-port", host="127.0.0.1").url == "ray://127.0.0.1:10001"


class Heads:
    """The job's head as a test sets it: a pod name, or the reason there is none."""

    def __init__(self, pod: str, then: str | None = None) -> None:
        self.pod: str | None = pod
        self.reason = ""
        self.then = then  # the head the job names from the second look on (a retry happened in between)

    def lookup(self) -> str:
        if self.pod is None:
            raise NoHead(self.reason)
        pod = self.pod
        if self.then is not None:
            self.pod, self.then = self.then, None
        return pod


def test_the_route_says_once_when_the_head_changes_and_once_per_reason_there_is_none() -> None:
    heads, said = Heads("pong-head-1"), []
    route = HeadRoute(heads.lookup, said.append, current="pong-head-1")
    assert route.head() == "pong-head-1" and said == []
    heads.pod = "pong-head-2"
    assert [route.head(), route.head()] == ["pong-head-2", "pong-head-2"]
    assert said == ["head pod changed: pong-head-1 -> pong-head-2; new connections go to pong-head-2"]
    heads.pod, heads.reason = None, "rltrainingjob pong is Pending"
    for _ in range(3):
        with pytest.raises(NoHead):
            route.head()
    assert said[1:] == ["no head pod to forward to: rltrainingjob pong is Pending; connections are closed until there is one"]
    heads.pod = "pong-head-3"
    assert route.head() == "pong-head-3" and route.current == "pong-head-3"
    assert said[2:] == ["head pod changed: pong-head-2 -> pong-head-3; new connections go to pong-head-3"]


@pytest.fixture
def serving() -> Any:
    """A Forwarder on free local ports, serving in a thread, over fake pods; closed after the test."""
    made: list[tuple[Forwarder, threading.Thread]] = []

    def start(heads: Heads, opener: Any) -> tuple[Forwarder, list[str], list[str]]:
        said: list[str] = []
        warned: list[str] = []
        forwarder = Forwarder(HeadRoute(heads.lookup, said.append, current=heads.pod), opener, dashboard_ports(0, 0),
                              warned.append)
        forwarder.listen()
        thread = threading.Thread(target=forwarder.serve, daemon=True)
        thread.start()
        made.append((forwarder, thread))
        return forwarder, said, warned

    yield start
    for forwarder, thread in made:
        forwarder.close()
        thread.join(10)
        assert not thread.is_alive()


def test_new_connections_go_to_the_current_head_on_both_ports_and_the_listeners_stay(serving: Any) -> None:
    heads = Heads("pong-head-1")
    with fake_pods() as pods:
        pods.add("pong-head-1", c.PORT_DASHBOARD, c.PORT_CLIENT)
        pods.add("pong-head-2", c.PORT_DASHBOARD, c.PORT_CLIENT)
        forwarder, said, warned = serving(heads, pods.open)
        dashboard, client = forwarder.ports
        assert dashboard.local != 0 and client.local != 0 and dashboard.host == "localhost"
        assert ask(dashboard.local, "GET /") == "pong-head-1 8265 GET /"
        assert ask(client.local, "hi", host="::1") == "pong-head-1 10001 hi"  # both loopbacks, as "localhost" may be either
        heads.pod = "pong-head-2"
        assert ask(dashboard.local) == "pong-head-2 8265 hello"
        assert ask(client.local) == "pong-head-2 10001 hello"
        assert said == ["head pod changed: pong-head-1 -> pong-head-2; new connections go to pong-head-2"]
        assert warned == []


def test_a_failed_open_looks_again_and_tries_a_new_head_once(serving: Any) -> None:
    heads = Heads("pong-head-1", then="pong-head-2")
    with fake_pods() as pods:
        pods.add("pong-head-2", c.PORT_DASHBOARD)  # pong-head-1 has none: it is gone
        forwarder, said, warned = serving(heads, pods.open)
        assert ask(forwarder.ports[0].local) == "pong-head-2 8265 hello"
        assert pods.opened == [("pong-head-1", 8265), ("pong-head-2", 8265)]
        assert said == ["head pod changed: pong-head-1 -> pong-head-2; new connections go to pong-head-2"]
        # The same head refused again: one line, the connection closed, the listener still there.
        pods.remove("pong-head-2")
        assert ask(forwarder.ports[0].local) == ""
        assert warned == ['port-forward to pod pong-head-2 port 8265: pods "pong-head-2" not found']
        assert pods.opened[2:] == [("pong-head-2", 8265)]


def test_without_a_head_connections_close_unanswered_until_there_is_one(serving: Any) -> None:
    heads = Heads("pong-head-1")
    with fake_pods() as pods:
        pods.add("pong-head-2", c.PORT_DASHBOARD)
        forwarder, said, warned = serving(heads, pods.open)
        heads.pod, heads.reason = None, "rltrainingjob pong is Pending"
        assert ask(forwarder.ports[0].local) == "" and ask(forwarder.ports[0].local) == ""
        assert pods.opened == [] and warned == []
        assert said == ["no head pod to forward to: rltrainingjob pong is Pending; connections are closed until there is one"]
        heads.pod = "pong-head-2"
        assert ask(forwarder.ports[0].local) == "pong-head-2 8265 hello"


def test_the_error_channel_of_a_stream_is_one_line() -> None:
    heads = Heads("pong-head-1")
    warned: list[str] = []
    with fake_pods() as pods:
        pods.add("pong-head-1", c.PORT_DASHBOARD)

        def opener(pod: str, port: int) -> Any:
            stream = pods.open(pod, port)
            stream.error = lambda: "an error occurred forwarding 8265 -> 8265:\n connection refused"
            return stream

        forwarder = Forwarder(HeadRoute(heads.lookup, print), opener, dashboard_ports(0, 0), warned.append)
        forwarder.listen()
        thread = threading.Thread(target=forwarder.serve, daemon=True)
        thread.start()
        try:
            assert ask(forwarder.ports[0].local) == "pong-head-1 8265 hello"
        finally:
            forwarder.close()
            thread.join(10)
    assert warned == ["port-forward to pod pong-head-1 port 8265: an error occurred forwarding 8265 -> 8265: connection refused"]


def test_a_taken_port_names_the_flag_that_moves_it() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        forwarder = Forwarder(HeadRoute(Heads("x").lookup, print), lambda pod, remote: None,  # type: ignore[arg-type, return-value]
                              dashboard_ports(0, port), print)
        with pytest.raises(CliError) as err:
            forwarder.listen()
    assert str(err.value).startswith(f"cannot listen on 127.0.0.1:{port}: ") and str(err.value).endswith("; choose another --client-port")
