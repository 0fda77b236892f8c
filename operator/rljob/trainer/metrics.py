"""Training progress on the driver's one port (constants.PORT_METRICS): /metrics for Prometheus, /progress.

The operator reads /progress (and, once the pod has ended, the termination message) to write status.progress,
so the head pod holds no Kubernetes credentials: the job's own code, running there, gets no token to misuse.

A custom collector renders the latest ProgressRecord at scrape time, so counters that continue across attempts
(env steps, training time) are exposed as counters with their true lifetime values rather than as
prometheus_client Counters that would restart at zero in every new head pod. The names and labels are the
operator's (rljob.api.metrics): one query works against either.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ..api import metrics as m
from ..api.constants import PROGRESS_PATH
from .progress import ProgressRecord, progress_wire

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"  # where the chart's PodMonitor and ServiceMonitor scrape


class ProgressCollector:
    """Exposes the latest record; before the first iteration only rljob_driver_info is shown."""

    def __init__(self, job: str, namespace: str, recipe: str, experiment: str = "") -> None:
        self.job_labels = [namespace, job]  # in the order of rljob.api.metrics.JOB_LABELS
        self.info = {"experiment": experiment or job, "recipe": recipe}
        self.record: ProgressRecord | None = None
        self.checkpoint_iteration: int | None = None

    def update(self, record: ProgressRecord, checkpoint_iteration: int | None = None) -> None:
        self.record = record
        if checkpoint_iteration is not None:
            self.checkpoint_iteration = checkpoint_iteration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        info = InfoMetricFamily(m.DRIVER_INFO.name, m.DRIVER_INFO.help, labels=list(m.JOB_LABELS))
        info.add_metric(self.job_labels, self.info)
        yield info
        r = self.record
        if r is None:
            return

        def one(metric: m.Metric, value: float) -> Any:
            cls = CounterMetricFamily if metric.kind is m.Kind.COUNTER else GaugeMetricFamily
            fam = cls(metric.name, metric.help, labels=list(metric.labels))
            fam.add_metric(self.job_labels, float(value))
            return fam

        yield one(m.TRAINING_ITERATIONS, r.iteration)
        yield one(m.ENV_STEPS, r.env_steps)
        yield one(m.TRAINING_SECONDS, r.time_total_s)
        if r.episode_return_mean is not None:
            yield one(m.EPISODE_RETURN_MEAN, r.episode_return_mean)
        yield one(m.ENV_STEPS_PER_SECOND, r.env_steps_per_second)
        if r.attempt is not None:
            yield one(m.ATTEMPT, r.attempt)
        yield one(m.LAST_ITERATION_TIME, r.timestamp)
        if self.checkpoint_iteration is not None:
            yield one(m.LAST_CHECKPOINT_ITERATION, self.checkpoint_iteration)


class DriverServer(ThreadingHTTPServer):
    """The driver's one HTTP port: /metrics for Prometheus, /progress for the operator.

    One port rather than two, so the head's NetworkPolicy opens one. Each request gets a daemon thread, so a
    slow scraper never holds up the operator's read, and neither keeps a finished driver alive.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], collector: ProgressCollector, registry: Any) -> None:
        self.address_family = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0][0]
        self.collector = collector
        self.registry = registry
        super().__init__(address, DriverHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Dual stack: the operator reads the head at its pod IP, IPv4 or IPv6, whichever the cluster gives.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class DriverHandler(BaseHTTPRequestHandler):
    """GET /metrics: the Prometheus exposition, in the format the scraper asks for (Accept).

    GET /progress: 200, application/json, the latest record as status.progress's wire JSON
    (progress.progress_wire, some 300 bytes, never over MAX_PROGRESS_BYTES); before the first iteration 200 with
    `{}`, which the operator reads as nothing to write yet. Anything else: 404.
    """

    server: DriverServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == METRICS_PATH:
            from prometheus_client.exposition import choose_encoder

            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._answer(200, content_type, encoder(self.server.registry))
        elif path == PROGRESS_PATH:
            record = self.server.collector.record
            body = json.dumps({} if record is None else progress_wire(record), separators=(",", ":")).encode()
            self._answer(200, "application/json", body)
        else:
            self._answer(404, "text/plain; charset=utf-8", f"{path} not found: try {METRICS_PATH} or {PROGRESS_PATH}\n".encode())

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a scrape every few seconds would bury the training log (kubectl logs)."""


def serve(collector: ProgressCollector, port: int, addr: str = "") -> DriverServer | None:
    """Starts /metrics and /progress on a daemon thread; None when the port is taken (logged: training goes on).

    No `addr`: every address, IPv6 and IPv4 together where the pod has IPv6, else IPv4's. Port 0 picks a free port
    (DriverServer.port tells which).
    """
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    server = None
    for address in ([addr] if addr else ["::", "0.0.0.0"]):
        try:
            server = DriverServer((address, port), collector, registry)
            break
        except OSError as exc:  # the port taken, or (for "::") a pod without IPv6
            problem = exc
    if server is None:
        log.warning("metrics and progress endpoint not started on port %d: %s", port, problem)
        return None
    threading.Thread(target=server.serve_forever, name="rljob-driver-http", daemon=True).start()
    return server
