"""`rljob dashboard | tensorboard`: a job's Ray dashboard, its Ray client port and its training curves here.

The dashboard (8265) and the Ray client server (10001) run in the head pod, which a retry replaces: attempt N+1 has
a new head pod, named in status.headPod. `kubectl port-forward` resolves its target once and ends with that pod, so
rljob owns the listening sockets instead and opens one port-forward stream through the API server per accepted
connection, to the head pod the job names at that moment. The local ports stay open across attempts; what was
connected to the old head ends with it, and the next connection reaches the new one.

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
import errno
import io
import json
import selectors
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..api import constants as c
from ..api.vocabulary import Phase
from .cluster import CliError, Cluster, add_cluster_flags, get_job, guarded

# The driver's folder for event files under its checkpoint directory (rljob.trainer.driver.TENSORBOARD_DIR; not
# imported from there because the driver module pulls in the trainer's dependencies).
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_PORT = 6006
# Phases in which the head pod may be running: a Ray head exists from Initializing (the Ray cluster forming) on.
LIVE_PHASES = (Phase.INITIALIZING, Phase.RUNNING)
# Loopback only: neither the dashboard nor the Ray client server has authentication of its own.
LOOPBACK_V4, LOOPBACK_V6 = "127.0.0.1", "::1"

# Runs in a pod: the folder given as a base64 tar.gz on stdout; exit 3 when there is none (yet).
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
    p = sub.add_parser("dashboard", help="forward a job's Ray dashboard and Ray client port to this machine (until Ctrl-C)",
                       description="Listens on localhost:PORT (the Ray dashboard) and localhost:CLIENT_PORT (the Ray client, "
                       "ray://) and forwards every connection through the API server to the job's current head pod. The "
                       "ports stay open when a retry replaces the head: new connections go to the new head pod.")
    p.add_argument("name")
    p.add_argument("--port", type=int, default=c.PORT_DASHBOARD,
                   help="local port of the dashboard (default %(default)s; 0 picks a free one)")
    p.add_argument("--client-port", type=int, default=c.PORT_CLIENT,
                   help="local port of the Ray client server (default %(default)s; 0 picks a free one)")
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


# ── dashboard: local listeners, one stream per connection to the current head ────────────────────────────────


@dataclass(frozen=True)
class ForwardedPort:
    """One port of the head pod forwarded here: `local` is the port asked for (0: any), later the one bound."""

    remote: int
    local: int
    scheme: str
    flag: str  # the option that sets `local`, named when that port is taken
    host: str = "localhost"  # how the URL names this machine: both loopbacks bound, else the one that was

    @property
    def label(self) -> str:
        return f"Ray {c.PORT_NAMES[self.remote]}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.local}"


def dashboard_ports(port: int, client_port: int) -> list[ForwardedPort]:
    """The Ray dashboard (a browser's http://) and the Ray client server (ray.init("ray://...")) of the head."""
    return [ForwardedPort(c.PORT_DASHBOARD, port, "http", "--port"),
            ForwardedPort(c.PORT_CLIENT, client_port, "ray", "--client-port")]


class NoHead(Exception):
    """The job has no head pod to forward to at the moment (between attempts, suspended, finished, deleted)."""


class ForwardError(Exception):
    """A stream to the pod could not be opened (no such pod, refused upgrade)."""


@dataclass
class PodStream:
    """An open byte stream to one port of a pod: `sock` is connected to it; `error` says, once the stream has
    ended, what the far end reported (the port-forward's error channel), if anything."""

    sock: Any  # socket-like: recv, sendall, shutdown, close
    error: Callable[[], str | None]
    close: Callable[[], None]


# Opens a stream to pod P's port N: the API server's port-forward in the command, a local server in the tests.
Opener = Callable[[str, int], PodStream]


class HeadRoute:
    """Which head pod a new connection goes to: looked up for every connection, so that the head a retry creates
    takes over without restarting the command. Tells once when the head changes, and once per reason why there is
    none, so a browser's burst of connections does not print a burst of lines."""

    def __init__(self, lookup: Callable[[], str], say: Callable[[str], None], current: str | None = None) -> None:
        self._lookup, self._say = lookup, say
        self._lock = threading.Lock()
        self.current = current
        self._refusal: str | None = None

    def head(self) -> str:
        """The current head pod's name; NoHead when the job has none now."""
        try:
            pod = self._lookup()
        except NoHead as exc:
            with self._lock:
                if str(exc) != self._refusal:
                    self._refusal = str(exc)
                    self._say(f"no head pod to forward to: {exc}; connections are closed until there is one")
            raise
        with self._lock:
            previous, self.current, self._refusal = self.current, pod, None
            if previous is not None and previous != pod:
                self._say(f"head pod changed: {previous} -> {pod}; new connections go to {pod}")
        return pod


def job_head_lookup(cluster: Cluster, name: str) -> Callable[[], str]:
    """The job's status.headPod as the API server has it now, while the job is in a phase with a running head."""

    def lookup() -> str:
        try:
            return live_head_pod(get_job(cluster, name), "the Ray dashboard")
        except CliError as exc:
            raise NoHead(" ".join(str(exc).split())) from None

    return lookup


def client_opener(cluster: Cluster) -> Opener:
    """Streams through the API server's pods/portforward (the Kubernetes client's websocket), as kubectl's."""
    from kubernetes.stream import portforward

    core = cluster.core()

    def open_stream(pod: str, remote: int) -> PodStream:
        try:
            forward = portforward(core.connect_get_namespaced_pod_portforward, pod, cluster.namespace, ports=str(remote))
        except Exception as exc:  # a refused upgrade arrives as ApiException (status 0) or a websocket error
            raise ForwardError(" ".join(str(getattr(exc, "reason", None) or exc).split())) from None
        sock = forward.socket(remote)
        sock.setblocking(True)
        return PodStream(sock, lambda: forward.error(remote), forward.close)

    return open_stream


class Forwarder:
    """Listening sockets owned by rljob, on both loopback addresses (as kubectl binds "localhost"); every accepted
    connection is piped to a stream the opener opens to the current head pod."""

    def __init__(self, route: HeadRoute, opener: Opener, ports: list[ForwardedPort],
                 warn: Callable[[str], None]) -> None:
        self.route, self.opener, self.warn = route, opener, warn
        self.ports = list(ports)
        self._listeners: list[tuple[socket.socket, ForwardedPort]] = []
        self._wake_r, self._wake_w = socket.socketpair()  # close() wakes serve() through it
        self._serving = False

    def listen(self) -> list[ForwardedPort]:
        """Binds every port (CliError naming the flag when one is taken); returns them with the ports bound."""
        bound = []
        for port in self.ports:
            try:
                v4 = socket.create_server((LOOPBACK_V4, port.local))
            except OSError as exc:
                self.close()
                raise CliError(f"cannot listen on {LOOPBACK_V4}:{port.local}: {exc.strerror}; "
                               f"choose another {port.flag}") from None
            number = v4.getsockname()[1]
            self._listeners.append((v4, port))
            host = "localhost"
            try:
                v6 = socket.create_server((LOOPBACK_V6, number), family=socket.AF_INET6)
                self._listeners.append((v6, port))
            except OSError as exc:
                # No IPv6 loopback here: 127.0.0.1 alone. Taken by another program: "localhost" might reach that one,
                # so the URL names 127.0.0.1.
                host = LOOPBACK_V4
                if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EADDRINUSE):
                    self.close()
                    raise CliError(f"cannot listen on [{LOOPBACK_V6}]:{number}: {exc.strerror}") from None
            bound.append(replace(port, local=number, host=host))
        self.ports = bound
        return bound

    def serve(self) -> None:
        """Accepts until close(); each connection is served by its own threads."""
        self._serving = True
        with selectors.DefaultSelector() as sel, self._wake_r, self._wake_w:
            for sock, port in self._listeners:
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, port)
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            while True:
                ready = sel.select()
                if any(key.data is None for key, _ in ready):
                    return
                for key, _ in ready:
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except OSError:
                        continue  # the client gave up before it was taken, or close() came first
                    conn.setblocking(True)
                    threading.Thread(target=self._serve_one, args=(conn, key.data), daemon=True).start()

    def close(self) -> None:
        """Stops serve() and closes the listeners; connections being served go on until they end."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if not self._serving:  # else serve() closes the pair once it has woken
            self._wake_r.close()
            self._wake_w.close()
        for sock, _ in self._listeners:
            sock.close()

    def _open(self, remote: int) -> tuple[str, PodStream] | None:
        """A stream to the head; when opening fails, the job is read again, and a new head gets one try."""
        failed: tuple[str, ForwardError] | None = None
        for _ in range(2):
            try:
                pod = self.route.head()
            except NoHead:
                return None
            if failed is not None and failed[0] == pod:
                break
            try:
                return pod, self.opener(pod, remote)
            except ForwardError as exc:
                failed = (pod, exc)
        assert failed is not None
        self.warn(f"port-forward to pod {failed[0]} port {remote}: {failed[1]}")
        return None

    def _serve_one(self, conn: socket.socket, port: ForwardedPort) -> None:
        with conn:
            opened = self._open(port.remote)
            if opened is None:
                return
            pod, stream = opened
            try:
                upstream = threading.Thread(target=_pump, args=(conn, stream.sock), daemon=True)
                upstream.start()
                _pump(stream.sock, conn)
                # The pod's side ended (a response sent in full, or the pod gone): so does the connection, as with
                # kubectl; the shutdown also ends the other pump's wait for the client.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                upstream.join()
                error = stream.error()
                if error:
                    self.warn(f"port-forward to pod {pod} port {port.remote}: {' '.join(error.split())}")
            finally:
                stream.close()


def dashboard_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    head = live_head_pod(get_job(cluster, args.name), "the Ray dashboard")

    def say(line: str) -> None:
        print(line, flush=True)

    def warn(line: str) -> None:
        print(f"rljob: {line}", file=sys.stderr, flush=True)

    route = HeadRoute(job_head_lookup(cluster, args.name), say, current=head)
    forwarder = Forwarder(route, client_opener(cluster), dashboard_ports(args.port, args.client_port), warn)
    ports = forwarder.listen()
    titles = [f"{p.label} of {args.name}:" for p in ports]
    for title, p in zip(titles, ports, strict=True):
        say(f"{title:<{max(map(len, titles))}} {p.url}")
    say(f"forwarding to head pod {head}; a retry's new head takes over (Ctrl-C to stop)")
    try:
        forwarder.serve()
    except KeyboardInterrupt:
        return 0
    finally:
        forwarder.close()
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


def exec_command(kubectl: str, args: argparse.Namespace, namespace: str, pod: str, remote_dir: str,
                 container: str = c.CONTAINER_NAME_HEAD) -> list[str]:
    return [kubectl, "exec", *kubectl_flags(args, namespace), pod, "-c", container, "--",
            "python", "-c", PACK_SCRIPT, remote_dir]


def fetch_events(cluster: Cluster, args: argparse.Namespace, pod: str) -> bytes | None:
    """The head pod's event folder as tar.gz bytes; None when the driver has written none yet."""
    return fetch_folder(cluster, args, pod, f"{c.CHECKPOINT_MOUNT}/{TENSORBOARD_DIR}")


def fetch_folder(cluster: Cluster, args: argparse.Namespace, pod: str, remote_dir: str,
                 container: str = c.CONTAINER_NAME_HEAD) -> bytes | None:
    """A folder of a pod's container as tar.gz bytes (packed by the image's Python, through kubectl exec when
    kubectl is installed, else the client's); None when the folder does not exist."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run(exec_command(kubectl, args, cluster.namespace, pod, remote_dir, container),
                             capture_output=True, text=True, timeout=300)
        if out.returncode == NO_EVENTS_YET:
            return None
        if out.returncode != 0:
            raise CliError(f"copy from pod {pod}: {' '.join(out.stderr.split()) or f'kubectl exit {out.returncode}'}")
        text = out.stdout
    else:
        code, text, problem = _client_exec(cluster, pod, ["python", "-c", PACK_SCRIPT, remote_dir], container)
        if code == NO_EVENTS_YET:
            return None
        if code != 0:
            raise CliError(f"copy from pod {pod}: {problem}")
    return base64.b64decode(text)


def _client_exec(cluster: Cluster, pod: str, command: list[str],
                 container: str = c.CONTAINER_NAME_HEAD) -> tuple[int | None, str, str]:
    """(exit code or None, stdout, what went wrong) of a command in a container of the pod, through the client."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream
    from kubernetes.stream.ws_client import ERROR_CHANNEL

    try:
        resp = stream(cluster.core().connect_get_namespaced_pod_exec, pod, cluster.namespace,
                      container=container, command=command,
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


def unpack_archive(archive: bytes, logdir: Path) -> int:
    """Writes the archive's regular files under `logdir`, refusing the whole archive when a path would leave it
    (the pod is not trusted to name where files land here); links and devices are left out. Returns how many
    files there were."""
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
        return 0 if archive is None else unpack_archive(archive, logdir)

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
