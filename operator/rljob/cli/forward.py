"""`rljob dashboard | tensorboard`: a job's Ray dashboard and its training curves on this machine.

The dashboard is served by the Ray head (port 8265 of the job's head Service), so it is a port-forward:
through `kubectl port-forward` when kubectl is installed (what users already trust, with its own reconnects),
else through the Kubernetes client's port-forward to the head pod.

TensorBoard is different: the driver writes event files (tensorboardX) next to its checkpoints on the head pod,
and the runtime image has no TensorBoard server to forward to. So the command copies the event files out of the
head pod (an exec of the image's own Python, packing them as base64 text, which survives both kubectl and the
client's text streams), refreshes the copy every few seconds, and runs a local `tensorboard` on it when one is
installed; without one it says where the files are.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from ..api import constants as c
from ..api import names
from ..api.vocabulary import Phase
from .cluster import CliError, Cluster, add_cluster_flags, get_job, guarded

# The driver's folder for event files under its checkpoint directory (rljob.trainer.driver.TENSORBOARD_DIR; not
# imported from there because the driver module pulls in the trainer's dependencies).
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_PORT = 6006
# Phases in which the head pod may be running: a Ray head exists from Initializing (the Ray cluster forming) on.
LIVE_PHASES = (Phase.INITIALIZING, Phase.RUNNING)

# Runs in the head pod: the event folder as a base64 tar.gz on stdout; exit 3 when there is none yet.
PACK_SCRIPT = (
    "import base64,io,os,sys,tarfile\n"
    "d=sys.argv[1]\n"
    "if not os.path.isdir(d): sys.exit(3)\n"
    "b=io.BytesIO()\n"
    "with tarfile.open(fileobj=b,mode='w:gz') as t: t.add(d,arcname='.')\n"
    "sys.stdout.write(base64.b64encode(b.getvalue()).decode())\n"
)
NO_EVENTS_YET = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="port-forward a job's Ray dashboard to this machine (until Ctrl-C)",
                       description="Forwards 127.0.0.1:PORT to the Ray dashboard on the job's head Service and prints "
                       "the URL. Uses kubectl port-forward when kubectl is on PATH, else the Kubernetes client.")
    p.add_argument("name")
    p.add_argument("--port", type=int, default=c.PORT_DASHBOARD,
                   help="local port (default %(default)s; 0 picks a free one)")
    add_cluster_flags(p)
    p.set_defaults(func=guarded(dashboard_cmd))

    p = sub.add_parser("tensorboard", help="copy a job's TensorBoard files here and serve them (until Ctrl-C)",
                       description="Copies the event files the driver writes on the head pod (under "
                       f"{c.CHECKPOINT_MOUNT}/{TENSORBOARD_DIR}) to --logdir, refreshes them every --interval seconds, "
                       "and runs a local TensorBoard on them when `tensorboard` is installed (pip install tensorboard).")
    p.add_argument("name")
    p.add_argument("--port", type=int, default=TENSORBOARD_PORT, help="local TensorBoard port (default %(default)s)")
    p.add_argument("--logdir", type=Path, default=None,
                   help="where the copies go (default: runs/<namespace>/<name>/tensorboard)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between refreshes (default %(default)s)")
    p.add_argument("--once", action="store_true", help="copy the files once and exit, without starting TensorBoard")
    add_cluster_flags(p)
    p.set_defaults(func=guarded(tensorboard_cmd))



def live_head_pod(job: dict[str, Any], what: str) -> str:
    """The head pod's name, or a CliError saying why the job has none to reach right now."""
    name = job["metadata"]["name"]
    st = job.get("status") or {}
    phase = st.get("phase") or Phase.PENDING
    if phase not in LIVE_PHASES or not st.get("headPod"):
        raise CliError(f"{c.SINGULAR} {name} is {phase}: {what} runs in its head pod, which is up only while the job "
                       f"is {' or '.join(LIVE_PHASES)}")
    return str(st["headPod"])


def kubectl_flags(args: argparse.Namespace, namespace: str) -> list[str]:
    """The cluster the CLI was pointed at, in kubectl's flags, so kubectl talks to the same API server."""
    flags = ["--namespace", namespace]
    if args.kubeconfig:
        flags += ["--kubeconfig", str(args.kubeconfig)]
    if args.context:
        flags += ["--context", args.context]
    return flags


def port_forward_command(kubectl: str, args: argparse.Namespace, namespace: str, target: str, local: int,
                         remote: int) -> list[str]:
    """`kubectl port-forward` bound to loopback only: the dashboard has no authentication of its own."""
    local_part = "" if local == 0 else str(local)
    return [kubectl, "port-forward", *kubectl_flags(args, namespace), "--address", "127.0.0.1", target,
            f"{local_part}:{remote}"]


def forwarded_url(line: str) -> str | None:
    """The local URL in kubectl's "Forwarding from 127.0.0.1:PORT -> REMOTE" line."""
    prefix = "Forwarding from "
    if not line.startswith(prefix):
        return None
    address = line[len(prefix):].split(" ->", 1)[0].strip()
    return f"http://{address}"


def dashboard_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    job = get_job(cluster, args.name)
    pod = live_head_pod(job, "the Ray dashboard")
    kubectl = shutil.which("kubectl")
    label = f"Ray dashboard of {args.name}"
    if kubectl:
        service = f"service/{names.head_service(args.name)}"
        return run_kubectl_forward(port_forward_command(kubectl, args, cluster.namespace, service, args.port,
                                                        c.PORT_DASHBOARD), label)
    return client_forward(cluster, pod, c.PORT_DASHBOARD, args.port, label)


def run_kubectl_forward(command: list[str], label: str) -> int:
    """Runs kubectl until it exits or Ctrl-C; prints the URL once kubectl says the port is open."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    shown = False
    try:
        for line in proc.stdout:
            url = forwarded_url(line)
            if url and not shown:
                shown = True
                print(f"{label}: {url}   (Ctrl-C to stop)", flush=True)
            elif not url:
                sys.stdout.write(line)  # kubectl's own notes, e.g. "Handling connection for 8265"
                sys.stdout.flush()
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def client_forward(cluster: Cluster, pod: str, remote: int, local: int, label: str) -> int:
    """A local listener whose every connection becomes one port-forward stream to the pod (what kubectl does)."""
    from kubernetes.stream import portforward

    core = cluster.core()
    try:
        server = socket.create_server(("127.0.0.1", local))
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{local}: {exc.strerror}; choose another --port") from None
    port = server.getsockname()[1]
    print(f"{label}: http://127.0.0.1:{port}   (Ctrl-C to stop)", flush=True)

    def serve(conn: socket.socket) -> None:
        try:
            forward = portforward(core.connect_get_namespaced_pod_portforward, pod, cluster.namespace, ports=str(remote))
        except Exception as exc:  # a refused upgrade arrives as ApiException or a websocket error
            print(f"rljob: port-forward to pod {pod}: {exc}", file=sys.stderr)
            conn.close()
            return
        remote_sock = forward.socket(remote)
        remote_sock.setblocking(True)
        pumps = [threading.Thread(target=_pump, args=(conn, remote_sock), daemon=True),
                 threading.Thread(target=_pump, args=(remote_sock, conn), daemon=True)]
        for t in pumps:
            t.start()
        for t in pumps:
            t.join()
        error = forward.error(remote)
        if error:
            print(f"rljob: port-forward to pod {pod}: {error}", file=sys.stderr)
        forward.close()

    try:
        with server:
            while True:
                conn, _ = server.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()
    except KeyboardInterrupt:
        return 0


def _pump(src: Any, dst: Any) -> None:
    """Copies bytes one way until either side closes, then half-closes the other so the peer sees the end."""
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def exec_command(kubectl: str, args: argparse.Namespace, namespace: str, pod: str, remote_dir: str) -> list[str]:
    return [kubectl, "exec", *kubectl_flags(args, namespace), pod, "-c", c.CONTAINER_NAME_HEAD, "--",
            "python", "-c", PACK_SCRIPT, remote_dir]


def fetch_events(cluster: Cluster, args: argparse.Namespace, pod: str) -> bytes | None:
    """The head pod's event folder as tar.gz bytes; None when the driver has written none yet."""
    remote_dir = f"{c.CHECKPOINT_MOUNT}/{TENSORBOARD_DIR}"
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run(exec_command(kubectl, args, cluster.namespace, pod, remote_dir),
                             capture_output=True, text=True, timeout=120)
        if out.returncode == NO_EVENTS_YET:
            return None
        if out.returncode != 0:
            raise CliError(f"copy from pod {pod}: {' '.join(out.stderr.split()) or f'kubectl exit {out.returncode}'}")
        text = out.stdout
    else:
        code, text, problem = _client_exec(cluster, pod, ["python", "-c", PACK_SCRIPT, remote_dir])
        if code == NO_EVENTS_YET:
            return None
        if code != 0:
            raise CliError(f"copy from pod {pod}: {problem}")
    return base64.b64decode(text)


def _client_exec(cluster: Cluster, pod: str, command: list[str]) -> tuple[int | None, str, str]:
    """(exit code or None, stdout, what went wrong) of a command in the head container, through the client."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream
    from kubernetes.stream.ws_client import ERROR_CHANNEL

    try:
        resp = stream(cluster.core().connect_get_namespaced_pod_exec, pod, cluster.namespace,
                      container=c.CONTAINER_NAME_HEAD, command=command,
                      stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
    except ApiException as exc:  # the upgrade itself refused: no such pod, not allowed
        return None, "", f"{exc.status} {exc.reason}"
    out: list[str] = []
    err: list[str] = []
    status = ""
    while True:
        resp.update(timeout=5)
        # Reading a channel with nothing buffered updates again and may buffer more of the others: the last
        # round, after the connection closed, takes those too.
        last = not resp.is_open()
        out.append(resp.read_stdout())
        err.append(resp.read_stderr())
        status += resp.read_channel(ERROR_CHANNEL)
        if last:
            out.append(resp.read_stdout())
            err.append(resp.read_stderr())
            status += resp.read_channel(ERROR_CHANNEL)
            break
    resp.close()
    code, message = exec_status(status)
    return code, "".join(out), " ".join("".join(err).split()) or message


def exec_status(text: str) -> tuple[int | None, str]:
    """The exit code in an exec's status message (the error channel's metav1.Status), or None and the reason
    when the command did not run at all (e.g. the node could not exec it)."""
    try:
        status = json.loads(text) if text.strip() else {}
    except ValueError:
        return None, " ".join(text.split())
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                code = int(cause.get("message", ""))
            except ValueError:
                break
            return code, f"exit code {code}"
    return None, " ".join(str(status.get("message") or "the exec ended without a status").split())


def unpack_events(archive: bytes, logdir: Path) -> int:
    """Writes the archive's files under `logdir` (refusing paths that leave it); returns how many there were."""
    logdir.mkdir(parents=True, exist_ok=True)
    root = logdir.resolve()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        for m in members:
            if not (root / m.name).resolve().is_relative_to(root):
                raise CliError(f"refusing {m.name!r} from the pod: it would land outside {logdir}")
        for m in members:
            source = tar.extractfile(m)
            assert source is not None  # a regular file always has content to read
            target = root / m.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    return len(members)


def tensorboard_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    job = get_job(cluster, args.name)
    pod = live_head_pod(job, "the driver writing TensorBoard files")
    logdir = args.logdir or Path("runs") / cluster.namespace / args.name / TENSORBOARD_DIR

    def refresh() -> int:
        archive = fetch_events(cluster, args, pod)
        return 0 if archive is None else unpack_events(archive, logdir)

    count = refresh()
    print(f"{count} TensorBoard file(s) of {args.name} copied to {logdir}"
          + ("" if count else " (none yet: the driver writes them from its first iteration on)"), flush=True)
    if args.once:
        return 0
    board = shutil.which("tensorboard")
    proc = None
    if board:
        proc = subprocess.Popen([board, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(args.port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"TensorBoard of {args.name}: http://127.0.0.1:{args.port}   (refreshed every {args.interval:.0f}s; "
              "Ctrl-C to stop)", flush=True)
    else:
        print(f"tensorboard is not installed here (pip install tensorboard); point one at {logdir}. "
              f"Refreshing the copy every {args.interval:.0f}s (Ctrl-C to stop).", flush=True)
    try:
        syncing = True
        while proc is None or proc.poll() is None:
            time.sleep(args.interval)
            if not syncing:
                continue
            try:
                refresh()
            except CliError as exc:
                try:  # the job ended or was suspended: its pod is gone, the copy stays usable
                    live_head_pod(get_job(cluster, args.name), "the driver writing TensorBoard files")
                except CliError as gone:
                    print(f"rljob: {gone}; stopped refreshing, the files copied so far stay in {logdir}", file=sys.stderr)
                    if proc is None:
                        return 0
                    syncing = False
                    continue
                print(f"rljob: {exc} (trying again in {args.interval:.0f}s)", file=sys.stderr)
        return proc.returncode if proc is not None else 0
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
