"""`rljob dashboard` and `rljob tensorboard`: the kubectl commands they run, the URL they print, and the copy of
the event files out of the head pod (the pod's side runs here in a real interpreter, through a stand-in kubectl)."""
from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import tarfile
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
    exec_command,
    exec_status,
    fetch_events,
    forwarded_url,
    live_head_pod,
    port_forward_command,
    run_kubectl_forward,
    unpack_events,
)


def cli_args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"kubeconfig": None, "context": None, "namespace": None, **kw})


def test_port_forward_command_targets_the_head_service_on_loopback() -> None:
    cmd = port_forward_command("kubectl", cli_args(kubeconfig="/k/config", context="prod"), "team-a", "service/pong-head",
                               8265, c.PORT_DASHBOARD)
    assert cmd == ["kubectl", "port-forward", "--namespace", "team-a", "--kubeconfig", "/k/config", "--context", "prod",
                   "--address", "127.0.0.1", "service/pong-head", "8265:8265"]
    # Port 0: kubectl's own syntax for "any free local port".
    assert port_forward_command("kubectl", cli_args(), "ns", "service/x-head", 0, 8265)[-1] == ":8265"


def test_the_url_comes_from_kubectls_forwarding_line() -> None:
    assert forwarded_url("Forwarding from 127.0.0.1:41234 -> 8265\n") == "http://127.0.0.1:41234"
    assert forwarded_url("Handling connection for 8265\n") is None


def job(phase: str | None, head_pod: str | None = "pong-head-1") -> dict[str, Any]:
    status = {k: v for k, v in (("phase", phase), ("headPod", head_pod)) if v}
    return {"metadata": {"name": "pong"}, "status": status}


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
    assert unpack_events(base64.b64decode(packed.stdout), out) == 2
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
        unpack_events(buf.getvalue(), tmp_path / "logdir")
    assert not (tmp_path / "escaped").exists()


# A stand-in for kubectl: records its arguments; `exec` runs the command after `--` here, with the pod's checkpoint
# mount mapped to a local folder; `port-forward` prints what kubectl prints.
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
print("Forwarding from 127.0.0.1:18265 -> 8265", flush=True)
print("Handling connection for 18265", flush=True)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
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
    assert archive is not None and unpack_events(archive, tmp_path / "copy") == 2
    expected = exec_command("kubectl", args, "team-a", "pong-head-1", f"{c.CHECKPOINT_MOUNT}/{TENSORBOARD_DIR}")
    assert logged(fake_kubectl)[-1] == expected[1:]
    assert expected[expected.index("-c") + 1] == c.CONTAINER_NAME_HEAD


def test_fetch_events_reports_a_failed_exec(fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EXIT", "1")
    with pytest.raises(CliError) as err:
        fetch_events(SimpleNamespace(namespace="ns"), cli_args(), "pong-head-1")  # type: ignore[arg-type]
    assert str(err.value) == 'copy from pod pong-head-1: error: unable to upgrade connection: container not found ("ray-head")'


def test_kubectl_forward_prints_the_url_and_passes_kubectls_exit_code(
        fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    command = port_forward_command("kubectl", cli_args(), "ns", "service/pong-head", 18265, 8265)
    assert run_kubectl_forward(command, "Ray dashboard of pong") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["Ray dashboard of pong: http://127.0.0.1:18265   (Ctrl-C to stop)", "Handling connection for 18265"]
    assert logged(fake_kubectl) == [command[1:]]
    monkeypatch.setenv("FAKE_EXIT", "1")  # e.g. the pod went away
    assert run_kubectl_forward(command, "Ray dashboard of pong") == 1


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
