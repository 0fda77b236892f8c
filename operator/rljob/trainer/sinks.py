"""Where each iteration's progress goes: stdout, progress.jsonl, Prometheus and /progress, the termination
message, TensorBoard.

None of them talks to the API server: the operator reads progress from the head (/progress while it runs,
the termination message after), so the pod holds no credentials. The training loop hands every record to
every sink and shields itself from them: a sink that fails (full disk, read-only file) logs a warning, and
training goes on.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..api.constants import ENV_TERMINATION_LOG, TERMINATION_MESSAGE_PATH, TERMINATION_PROGRESS_KEY
from .checkpoints import iteration_of
from .metrics import ProgressCollector
from .progress import ProgressRecord, progress_wire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunHeader:
    """What a run is about to do, for sinks that show it (the display)."""

    job: str
    recipe: str
    algorithm: str
    env_runners: int
    stop: str
    resumed_from: int | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """How a run ended: `exit_code` is the process's, `reason` a sentence for people."""

    exit_code: int
    reason: str
    last: ProgressRecord | None = None
    checkpoint: str | None = None


class Sink:
    """Receives the run's header, each record, and the outcome; all no-ops by default."""

    def start(self, header: RunHeader) -> None:
        return None

    def record(self, record: ProgressRecord) -> None:
        return None

    def close(self, outcome: Outcome) -> None:
        return None


class JsonLinesSink(Sink):
    """One JSON object per line: stdout in the pods (kubectl logs), progress.jsonl on disk."""

    def __init__(self, stream: TextIO | None = None, path: Path | None = None) -> None:
        self.stream = stream
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, record: ProgressRecord) -> None:
        line = record.json_line()
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(line + "\n")


class TerminationMessageSink(Sink):
    """Leaves the latest progress as the head container's termination message: {"progress": <status.progress>}.

    /progress dies with the pod; the kubelet keeps this file's content (at most 4096 bytes) in the container's
    `state.terminated.message`, where the operator reads the attempt's last record after the pod has ended,
    with no credentials in the pod. Rewritten after every record (one small write, not appended), so the file
    holds the latest record however the driver ends.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_pod(
        cls, env: Mapping[str, str] = os.environ, default: Path = Path(TERMINATION_MESSAGE_PATH)
    ) -> TerminationMessageSink | None:
        """The sink for this pod, or None where there is nowhere to write.

        RLJOB_TERMINATION_LOG names the file if set; else /dev/termination-log, but only when it exists: the
        kubelet creates it in every container, and a driver outside a pod must not create it in /dev.
        """
        named = env.get(ENV_TERMINATION_LOG)
        path = Path(named) if named else default
        if not named and not path.is_file():
            return None
        if path.is_dir() or not path.parent.is_dir() or not os.access(path if path.exists() else path.parent, os.W_OK):
            return None
        return cls(path)

    def record(self, record: ProgressRecord) -> None:
        self._write(record)

    def close(self, outcome: Outcome) -> None:
        # A stop by signal saves a checkpoint after the last iteration: the message says where it is.
        if outcome.last is not None:
            self._write(outcome.last)

    def _write(self, record: ProgressRecord) -> None:
        message = json.dumps({TERMINATION_PROGRESS_KEY: progress_wire(record)}, separators=(",", ":"))
        with self.path.open("w", encoding="utf-8") as f:  # the kubelet reads it only once the container has exited
            f.write(message)


class MetricsSink(Sink):
    """Feeds the collector behind /metrics and /progress, at close with the checkpoint a stop by signal saved."""

    def __init__(self, collector: ProgressCollector) -> None:
        self.collector = collector

    def record(self, record: ProgressRecord) -> None:
        self.collector.update(record, iteration_of(record.checkpoint))

    def close(self, outcome: Outcome) -> None:
        if outcome.last is not None:
            self.collector.update(outcome.last, iteration_of(outcome.last.checkpoint))


class TensorBoardSink(Sink):
    """Event files keyed by env steps, the x axis RL curves are compared on."""

    def __init__(self, logdir: Path) -> None:
        from tensorboardX import SummaryWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self.writer: Any = SummaryWriter(logdir=str(logdir))

    def record(self, record: ProgressRecord) -> None:
        step = record.env_steps
        if record.episode_return_mean is not None:
            self.writer.add_scalar("rljob/episode_return_mean", record.episode_return_mean, step)
        self.writer.add_scalar("rljob/env_steps_per_second", record.env_steps_per_second, step)
        self.writer.add_scalar("rljob/training_iteration", record.iteration, step)
        self.writer.add_scalar("rljob/time_total_s", record.time_total_s, step)
        for name, value in record.learner.items():
            self.writer.add_scalar(f"learner/{name}", value, step)
        self.writer.flush()

    def close(self, outcome: Outcome) -> None:
        self.writer.close()


class Sinks:
    """Fans out to sinks; a failing sink is logged (once per kind of failure) and otherwise ignored."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks
        self._warned: set[tuple[str, str]] = set()

    def _each(self, method: str, arg: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(arg)
            except Exception as exc:
                key = (type(sink).__name__, type(exc).__name__)
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("%s.%s failed (%s: %s); training goes on", key[0], method, key[1], exc)

    def start(self, header: RunHeader) -> None:
        self._each("start", header)

    def record(self, record: ProgressRecord) -> None:
        self._each("record", record)

    def close(self, outcome: Outcome) -> None:
        self._each("close", outcome)


def stdout_json() -> JsonLinesSink:
    return JsonLinesSink(stream=sys.stdout)
