"""Runs `rljob operator` as a subprocess, exactly as production runs it, for tests and `make dev-cluster`."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .processes import die_with_parent, free_port, tail, wait_for

__all__ = ["OPERATOR_NAMESPACE", "OperatorProcess", "rljob_executable"]

# Where the operator runs (`--operator-namespace`), as the chart installs it by default.
OPERATOR_NAMESPACE = "rljob-system"


def rljob_executable() -> str:
    """The `rljob` console script of this interpreter's environment (the installed entry point)."""
    beside = Path(sys.executable).parent / "rljob"
    if beside.exists():
        return str(beside)
    found = shutil.which("rljob")
    if not found:
        raise FileNotFoundError("the rljob entry point is not installed: run `make venv`")
    return found


class OperatorProcess:
    """`rljob operator` against ``kubeconfig`` on free metrics and health ports, its output appended to
    ``log_path``; :meth:`start` returns once its liveness endpoint answers. It can be started again after
    :meth:`stop` or :meth:`kill` (a restart, as a Deployment would do); it is stopped at interpreter exit."""

    def __init__(self, kubeconfig: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.kubeconfig, self.log_path, self.extra_args = kubeconfig, log_path, extra_args
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        atexit.register(self.stop)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        cmd = [
            rljob_executable(),
            "operator",
            "--kubeconfig",
            str(self.kubeconfig),
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--operator-namespace",
            OPERATOR_NAMESPACE,
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        log.write(f"\n===== start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.starts += 1
        wait_for(self._healthy, timeout=timeout, interval=0.3, description="the operator's liveness endpoint")
        return self

    def _healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited early:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to clean up, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def running_with_log(self) -> Iterator[OperatorProcess]:
        """For a fixture: this operator, started again if an earlier test left it dead; its log during the test is
        printed afterwards, which pytest shows only when the test failed."""
        if not self.alive():
            self.start()
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        yield self
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            print("----- operator log during this test -----\n" + f.read().decode("utf-8", "replace")[-20000:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)
