"""Child processes of the test cluster: started in their own session with their output in a log file, killed
with their parent, stopped at interpreter exit and on SIGTERM/SIGHUP; plus the small helpers around them (free
ports, log tails, polling).

Every process is started in its own session and stopped with :func:`terminate` (SIGTERM to its process group,
then SIGKILL); on Linux the processes also get SIGKILL if the thread that started them dies
(``PR_SET_PDEATHSIG``), so even a killed test run leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from .errors import ControlPlaneError

__all__ = [
    "LOCALHOST",
    "Component",
    "Stoppable",
    "die_with_parent",
    "forget_on_exit",
    "free_port",
    "install_signal_handlers",
    "kill_group",
    "spawn",
    "stop_on_exit",
    "tail",
    "terminate",
    "wait_for",
]

#: Everything the test cluster runs listens here only.
LOCALHOST = "127.0.0.1"

T = TypeVar("T")


#: Every wait's limit is multiplied by this (``RLJOB_TEST_TIMEOUT_SCALE``, default 3). A limit only says when to give
#: up, never how fast something must be, and `make test` runs the e2e tests' pods beside the integration tests on the
#: same cores. pytest-timeout's per-test limit is scaled by it too (tests/conftest.py).
TIMEOUT_SCALE = float(os.environ.get("RLJOB_TEST_TIMEOUT_SCALE") or 3)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    description: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that; raise ``TimeoutError`` after
    ``timeout`` seconds times :data:`TIMEOUT_SCALE`. Exceptions of the ``ignore`` types count as "not yet" (the last
    one is reported)."""
    timeout *= TIMEOUT_SCALE
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore as e:
            last_error = e
        if time.monotonic() >= deadline:
            what = description or getattr(predicate, "__name__", "condition")
            extra = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


# Ports handed out already: the kernel may return a port again once its probe socket is closed, before the
# component it was meant for has bound it.
_allocated_ports: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (not handed out before by this process)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOCALHOST, 0))
            port = s.getsockname()[1]
        if port not in _allocated_ports:
            _allocated_ports.add(port)
            return port
    raise ControlPlaneError("could not find a free port on 127.0.0.1")


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (read from its last 64 KiB), or why it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


# PR_SET_PDEATHSIG: the kernel sends SIGKILL to a child when the thread that forked it dies, so a test run that
# is killed with SIGKILL (where no Python cleanup can run) still leaves no process behind. Resolved here, in the
# parent, so the child only makes one plain call between fork and exec.
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover
    _prctl = None


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGKILL when ``parent_pid``'s forking thread dies (Linux)."""

    def setup() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl
                os._exit(1)

    return setup


@dataclass
class Component:
    """One running process and the log file its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def exited(self) -> int | None:
        return self.proc.poll()


def spawn(
    name: str,
    args: Sequence[str | os.PathLike[str]],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    with_parent: bool = True,
) -> Component:
    """Start ``args`` in a session of its own (so :func:`terminate` reaches everything it starts), stdin from
    /dev/null, stdout and stderr appended to ``log_path`` after a line with the command. With ``with_parent``
    it dies with this process (:func:`die_with_parent`). The caller closes ``log_file`` once it has stopped."""
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by the owner of the Component once it is stopped
    log_file.write(f"# {' '.join(map(str, args))}\n".encode())
    log_file.flush()
    proc = subprocess.Popen(
        [str(a) for a in args],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        preexec_fn=die_with_parent(os.getpid()) if with_parent else None,
    )
    return Component(name, proc, log_path, log_file)


def kill_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group of a process started in its own session (pgid == pid); a group that is
    gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def terminate(components: Sequence[Component], grace: float) -> None:
    """SIGTERM to each component's process group, up to ``grace`` seconds (for all together) to exit, then
    SIGKILL to the groups, which also reaps anything a component left behind in its group."""
    if not components:
        return
    for c in components:
        if c.exited() is None:
            kill_group(c.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for c in components:
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for c in components:
        kill_group(c.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.proc.wait(timeout=5)


class Stoppable(Protocol):
    def stop(self) -> None: ...


# Everything that must be stopped at interpreter exit and on SIGTERM/SIGHUP (running control planes).
_live: set[Stoppable] = set()
_live_lock = threading.Lock()


def stop_on_exit(obj: Stoppable) -> None:
    """Have ``obj.stop()`` called at interpreter exit and on SIGTERM/SIGHUP (see :func:`install_signal_handlers`)."""
    with _live_lock:
        _live.add(obj)


def forget_on_exit(obj: Stoppable) -> None:
    """Undo :func:`stop_on_exit` (``obj`` has stopped)."""
    with _live_lock:
        _live.discard(obj)


def _stop_all() -> None:
    with _live_lock:
        live = list(_live)
    for obj in live:
        with contextlib.suppress(Exception):
            obj.stop()


atexit.register(_stop_all)


def _on_fatal_signal(signum: int, frame: Any) -> None:
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers() -> None:
    """Stop what :func:`stop_on_exit` registered on SIGTERM/SIGHUP, then die of the signal as before; only where
    nobody else handles the signal already (Python's default for them skips atexit)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _on_fatal_signal)
