"""Stand-ins for ports of pods, for the dashboard's forwarder: one local TCP server per (pod, port), and the opener
seam (rljob.cli.forward.Opener) that connects to them instead of the API server's port-forward.

Each server reads one line and answers "<pod> <port> <line>", so a test sees which pod and port a connection
reached and that bytes went both ways."""
from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rljob.cli.forward import ForwardError, PodStream


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        pod, port = self.server.identity  # type: ignore[attr-defined]
        self.wfile.write(f"{pod} {port} {line}\n".encode())


class FakePods:
    """Servers for the pods and ports added; `open` is the opener, refusing a pod that has no server (gone)."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, int], socketserver.ThreadingTCPServer] = {}
        self._lock = threading.Lock()
        self.opened: list[tuple[str, int]] = []

    def add(self, pod: str, *ports: int) -> None:
        for port in ports:
            server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.identity = (pod, port)  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            with self._lock:
                self._servers[(pod, port)] = server

    def remove(self, pod: str) -> None:
        with self._lock:
            gone = [key for key in self._servers if key[0] == pod]
            servers = [self._servers.pop(key) for key in gone]
        for server in servers:
            server.shutdown()
            server.server_close()

    def open(self, pod: str, port: int) -> PodStream:
        with self._lock:
            self.opened.append((pod, port))
            server = self._servers.get((pod, port))
        if server is None:
            raise ForwardError(f"pods \"{pod}\" not found")
        sock = socket.create_connection(server.server_address[:2], timeout=30)
        return PodStream(sock, lambda: None, sock.close)

    def close(self) -> None:
        for pod in {key[0] for key in list(self._servers)}:
            self.remove(pod)


@contextmanager
def fake_pods() -> Iterator[FakePods]:
    pods = FakePods()
    try:
        yield pods
    finally:
        pods.close()


def ask(port: int, line: str = "hello", host: str = "127.0.0.1") -> str:
    """One line sent through a forwarded local port; the answer, or "" when the connection was closed unanswered
    (a close with the line unread is a reset)."""
    data = b""
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(line.encode() + b"\n")
        try:
            while chunk := conn.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    return data.decode().strip()
