"""The CLI's kubectl habits against the real API server and a live operator: output formats, label selectors,
`list --watch`, suspend/resume/scale, the dashboard's and TensorBoard's refusals, completion of job names, and
the dry run's namespace."""
from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import yaml

from rljob.api import constants as c
from rljob.cli import build_parser
from rljob.cli.completion import bash_script
from rljob.cli.forward import dashboard_ports
from tests.builders import small_job
from tests.cluster.controlplane import ControlPlane, wait_for
from tests.cluster.operator_process import OperatorProcess, rljob_executable
from tests.integration.jobs import rljob, run_to, wait_phase


def labelled(name: str, namespace: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return small_job(name, namespace, metadata={"labels": labels}, **spec)


def test_output_formats_and_selectors(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, labelled("fmt-a", namespace, {"team": "red"}, experiment="exp-a"))
    run_to(cp, namespace, labelled("fmt-b", namespace, {"team": "blue"}, suspend=True), phase="Suspended")
    ns = ("-n", namespace)

    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        out = rljob(cp, "list", *ns, "-o", fmt)
        assert out.returncode == 0, out.stderr
        doc = load(out.stdout)
        assert (doc["apiVersion"], doc["kind"]) == ("v1", "List")
        by_name = {item["metadata"]["name"]: item for item in doc["items"]}
        assert set(by_name) == {"fmt-a", "fmt-b"}
        assert by_name["fmt-a"]["status"]["phase"] == "Running" and by_name["fmt-b"]["spec"]["suspend"] is True
        assert by_name["fmt-a"]["kind"] == c.KIND and by_name["fmt-a"]["metadata"]["uid"]

    names = rljob(cp, "list", *ns, "-o", "name")
    assert names.stdout.splitlines() == ["rltrainingjob.rljob.dev/fmt-a", "rltrainingjob.rljob.dev/fmt-b"]

    wide = rljob(cp, "list", *ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "EXPERIMENT", "PHASE", "WORKERS", "ITERATION", "REWARD", "DURATION", "AGE",
                               "REASON", "ATTEMPTS", "ENV-STEPS", "STEPS/S", "HEAD-POD", "SUSPEND"]
    rows = {line.split()[0]: line.split() for line in wide[1:]}
    assert rows["fmt-a"][2] == "Running" and rows["fmt-a"][-2] == "fmt-a-head-1" and rows["fmt-a"][-1] == "false"
    assert rows["fmt-b"][2] == "Suspended" and rows["fmt-b"][-1] == "true"

    assert rljob(cp, "list", *ns, "-l", "team=red", "-o", "name").stdout == "rltrainingjob.rljob.dev/fmt-a\n"
    assert len(rljob(cp, "list", *ns, "-l", "team in (red,blue)", "-o", "name").stdout.splitlines()) == 2
    none = rljob(cp, "list", *ns, "-l", "team=green")
    assert none.returncode == 0 and none.stdout.strip() == f"No RLTrainingJobs in namespace {namespace} matching team=green."
    bad = rljob(cp, "list", *ns, "-l", "team==in==")
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr

    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        job = load(rljob(cp, "status", "fmt-a", *ns, "-o", fmt).stdout)
        assert job["metadata"]["name"] == "fmt-a" and job["status"]["headPod"] == "fmt-a-head-1"
    assert rljob(cp, "status", "fmt-a", *ns, "-o", "name").stdout == "rltrainingjob.rljob.dev/fmt-a\n"
    shown = rljob(cp, "status", "fmt-a", *ns, "-o", "wide")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^POD\s+ROLE\s+PHASE\s+NODE", shown.stdout, re.M), shown.stdout
    assert re.search(r"^fmt-a-head-1\s+head\s+Running\s+\S+", shown.stdout, re.M), shown.stdout
    assert re.search(r"^fmt-a-workers-0\s+worker\s+Running", shown.stdout, re.M), shown.stdout
    assert "GENERATION" in shown.stdout

    both = rljob(cp, "delete", "fmt-a", "-l", "team=blue", *ns)
    assert both.returncode == 1 and "not both" in both.stderr
    gone = rljob(cp, "delete", "-l", "team=blue", *ns)
    assert gone.returncode == 0 and gone.stdout.startswith('rltrainingjob.rljob.dev "fmt-b" deleted'), gone.stderr
    wait_for(lambda: rljob(cp, "list", *ns, "-o", "name").stdout == "rltrainingjob.rljob.dev/fmt-a\n", timeout=30,
             description="only fmt-a left")


class Lines:
    """A child's stdout (or another of its streams), read by a thread so that a test can wait for a line with a
    timeout."""

    def __init__(self, proc: subprocess.Popen[str], stream: IO[str] | None = None) -> None:
        self.stream = stream or proc.stdout
        self.queue, self.seen = queue.Queue[str](), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.stream is not None
        for line in self.stream:
            self.queue.put(line.rstrip("\n"))

    def wait(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {timeout}s; seen: {self.seen}")


def test_list_watch_prints_a_row_per_change(control_plane: ControlPlane, live_operator: OperatorProcess,
                                            namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("watched", namespace))
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
    proc = subprocess.Popen([rljob_executable(), "list", "-w", "-n", namespace], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = Lines(proc)
        header = lines.wait(r"^NAME\s+EXPERIMENT\s+PHASE")
        first = lines.wait(r"^watched\s")
        assert first.split()[2] == "Running" and header.index("PHASE") == first.index("Running")
        assert rljob(cp, "suspend", "watched", "-n", namespace).returncode == 0
        lines.wait(r"^watched\s+\S+\s+Suspended\s")
        cp.apply(small_job("newcomer", namespace))
        lines.wait(r"^newcomer\s")
        assert proc.poll() is None  # still watching: it ends only when stopped
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_list_watch_as_names(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
    proc = subprocess.Popen([rljob_executable(), "list", "-w", "-o", "name", "-n", namespace, "-l", "team=red"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = Lines(proc)
        cp.apply(labelled("other", namespace, {"team": "blue"}))
        cp.apply(labelled("mine", namespace, {"team": "red"}))
        assert lines.wait("rltrainingjob") == "rltrainingjob.rljob.dev/mine"  # the selector left "other" out
    finally:
        proc.terminate()
        proc.wait(10)


def test_suspend_resume_scale(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str) -> None:
    cp = control_plane
    run_to(cp, namespace, small_job("ctl", namespace, backoffLimit=0))
    ns = ("-n", namespace)

    out = rljob(cp, "scale", "ctl", "--workers", "3", *ns)
    assert out.returncode == 0 and out.stdout.strip() == "rltrainingjob.rljob.dev/ctl scaled to 3 workers", out.stderr
    assert cp.get_json("rltj", "ctl", *ns)["spec"]["workers"]["replicas"] == 3
    wait_for(lambda: cp.get_json("statefulset", "ctl-workers", *ns)["spec"]["replicas"] == 3, timeout=30,
             description="the operator scaled the workers")
    assert "no change" in rljob(cp, "scale", "ctl", "--replicas", "3", *ns).stdout

    refused = rljob(cp, "scale", "ctl", "--workers", "600", *ns)
    assert refused.returncode == 1
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("rljob: patch rltrainingjob ctl: ") and "spec.workers.replicas" in refused.stderr
    assert "512" in refused.stderr
    assert cp.get_json("rltj", "ctl", *ns)["spec"]["workers"]["replicas"] == 3

    out = rljob(cp, "suspend", "ctl", *ns)
    assert out.returncode == 0 and out.stdout.strip() == "rltrainingjob.rljob.dev/ctl suspended", out.stderr
    wait_phase(cp, namespace, "ctl", "Suspended", 30)
    assert "(no change)" in rljob(cp, "suspend", "ctl", *ns).stdout
    out = rljob(cp, "resume", "ctl", *ns)
    assert out.returncode == 0 and out.stdout.strip() == "rltrainingjob.rljob.dev/ctl resumed", out.stderr
    wait_phase(cp, namespace, "ctl", "Running", 60, attempts=2)

    cp.set_pod_phase(namespace, "ctl-head-2", "Failed", exit_code=1)
    wait_phase(cp, namespace, "ctl", "Failed", 30)
    ended = rljob(cp, "suspend", "ctl", *ns)
    assert ended.returncode == 1 and ended.stderr.strip() == "rljob: cannot suspend rltrainingjob ctl: it has ended (Failed)"

    missing = rljob(cp, "resume", "nope", *ns)
    assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1
    assert missing.stderr.startswith(f"rljob: get rltrainingjob {namespace}/nope: ") and "not found" in missing.stderr


# Stands in for kubectl where the cluster has no kubelet to exec in: it records its arguments and answers like
# kubectl whose exec finds no event files yet (exit 3).
FAKE_KUBECTL = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(3)
"""


def test_dashboard_and_tensorboard(control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str,
                                   tmp_path: Path) -> None:
    cp = control_plane
    ns = ("-n", namespace)
    for command in ("dashboard", "tensorboard"):
        missing = rljob(cp, command, "nope", *ns)
        assert missing.returncode == 1 and "not found" in missing.stderr and len(missing.stderr.splitlines()) == 1

    run_to(cp, namespace, small_job("idle", namespace, suspend=True), phase="Suspended")
    for command, what in (("dashboard", "the Ray dashboard"), ("tensorboard", "the driver writing TensorBoard files")):
        refused = rljob(cp, command, "idle", *ns)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (f"rljob: rltrainingjob idle is Suspended: {what} runs in its head pod, which is "
                                          "up only while the job is Initializing or Running")

    st = run_to(cp, namespace, small_job("live", namespace))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    log = tmp_path / "kubectl.log"
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log)}
    # The ports the dashboard forwards are the head container's.
    head = cp.get_json("pod", st["headPod"], *ns)
    exposed = {p["containerPort"] for x in head["spec"]["containers"] for p in x.get("ports", [])}
    assert {p.remote for p in dashboard_ports(0, 0)} <= exposed

    out = subprocess.run([rljob_executable(), "tensorboard", "live", *ns, "--once", "--logdir", str(tmp_path / "tb")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"0 TensorBoard file(s) of live copied to {tmp_path / 'tb'} (none yet")
    exec_args = json.loads(log.read_text().splitlines()[-1])
    pod = cp.get_json("pod", exec_args[exec_args.index("-c") - 1], *ns)
    assert pod["metadata"]["name"] == st["headPod"]
    assert exec_args[exec_args.index("-c") + 1] in {x["name"] for x in pod["spec"]["containers"]}
    assert exec_args[-1].startswith(c.CHECKPOINT_MOUNT)
    assert c.CHECKPOINT_MOUNT in {m["mountPath"] for x in pod["spec"]["containers"] for m in x.get("volumeMounts", [])}


def test_completion_offers_the_namespaces_jobs(control_plane: ControlPlane, live_operator: OperatorProcess,
                                               namespace: str, tmp_path: Path) -> None:
    cp = control_plane
    cp.apply(small_job("comp-one", namespace))
    cp.apply(small_job("comp-two", namespace))
    script = tmp_path / "rljob.bash"
    script.write_text(bash_script(build_parser()))
    complete = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _rljob; '
                "printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
    done = subprocess.run(["bash", "-c", complete, "complete", str(script), rljob_executable(), "status", "-n", namespace,
                           "comp-"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["comp-one", "comp-two"]


def test_the_contexts_namespace_for_dry_run_and_submit(control_plane: ControlPlane, live_operator: OperatorProcess,
                                                       namespace: str, tmp_path: Path) -> None:
    cp = control_plane
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(cp.kubeconfig.read_text())
    cp.kubectl("config", "set-context", "--current", f"--namespace={namespace}", f"--kubeconfig={kubeconfig}")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([rljob_executable(), *args], capture_output=True, text=True, env=env, timeout=60)

    dry = run("submit", "--recipe", "cartpole", "--name", "ctx-job", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert yaml.safe_load(dry.stdout)["metadata"]["namespace"] == namespace
    created = run("submit", "--recipe", "cartpole", "--name", "ctx-job", "--workers", "1")
    assert created.returncode == 0 and f"created in namespace {namespace}" in created.stdout, created.stderr
    assert cp.get_json("rltj", "ctx-job", "-n", namespace)["metadata"]["namespace"] == namespace

    refused = run("submit", "--recipe", "pong", "--name", "bad-args", "--", "--bogus", "1")
    assert refused.returncode == 2
    assert refused.stderr == "rljob: spec.entrypoint.args: recipe pong: error: unrecognized arguments: --bogus 1\n"
    assert cp.kubectl("get", "rltj", "bad-args", "-n", namespace, check=False).returncode != 0  # nothing was created


def test_the_dashboard_forwards_through_the_clients_port_forward(
        control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    """Local listeners, a port-forward stream through the API server per connection. The cluster's nodes have no
    kubelet to forward to (kwok answers for them, with no forwards configured), so what comes back is the refusal:
    one line, and the command keeps serving, on both ports. kubectl is not needed (none on PATH here)."""
    cp = control_plane
    run_to(cp, namespace, small_job("pf", namespace))
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "PATH": str(tmp_path)}
    proc = subprocess.Popen([rljob_executable(), "dashboard", "pf", "-n", namespace, "--port", "0", "--client-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines, errors = Lines(proc), Lines(proc, proc.stderr)
        dashboard = int(lines.wait(r"^Ray dashboard of pf: http://localhost:\d+$").rsplit(":", 1)[1])
        client = int(lines.wait(r"^Ray client of pf: +ray://localhost:\d+$").rsplit(":", 1)[1])
        lines.wait(r"^forwarding to head pod pf-head-1; ")
        for port, remote in ((dashboard, c.PORT_DASHBOARD), (client, c.PORT_CLIENT)):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert conn.recv(1024) == b""  # closed: nothing to forward to
            refusal = errors.wait(r"^rljob: ")
            assert refusal.startswith(f"rljob: port-forward to pod pf-head-1 port {remote}: "), errors.seen
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
    assert not any("Traceback" in line for line in errors.seen)


def test_without_kubectl_tensorboard_execs_through_the_client(
        control_plane: ControlPlane, live_operator: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    """The same fallback for the copy of the event files: the exec reaches the node's (kwok's) server, and its
    refusal is one line and exit 1, not a traceback."""
    cp = control_plane
    run_to(cp, namespace, small_job("tb", namespace))
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "PATH": str(tmp_path)}  # no kubectl on PATH
    out = subprocess.run([rljob_executable(), "tensorboard", "tb", "-n", namespace, "--once", "--logdir", str(tmp_path / "tb")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.startswith("rljob: copy from pod tb-head-1: ") and len(out.stderr.splitlines()) == 1, out.stderr
    assert "no exec found" in out.stderr  # kwok's own words, passed on
