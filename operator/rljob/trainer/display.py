"""The progress display of `rljob run`: a live status line on a terminal, plain lines otherwise.

Plain lines (one per iteration) are what CI logs and `| tee` want; the live line repaints in place,
with a ticking clock between iterations (a Pong iteration on a CPU can take a while), and log
messages are printed above it rather than through it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TextIO

from .progress import ProgressRecord
from .sinks import Outcome, RunHeader, Sink
from .stop import StopCriteria, eta_seconds
from .timers import split_text

CLEAR_LINE = "\r\x1b[2K"


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def status_text(record: ProgressRecord | None, elapsed: float, eta: float | None) -> str:
    if record is None:
        return f"starting... elapsed {clock_text(elapsed)}"
    ret = "   n/a" if record.episode_return_mean is None else f"{record.episode_return_mean:7.2f}"
    # The policy's entropy falls from uniform (ln 6 = 1.79 for Pong) well before the return moves.
    entropy = record.learner.get("entropy")
    learning = "" if entropy is None else f" | entropy {entropy:5.3f}"
    # Where the iteration's time went: what a change to the learner or the sampler should move.
    split = split_text(record.timers)
    learning += f" | {split}" if split else ""
    return (
        f"iter {record.iteration:5d} | return {ret}{learning} | env steps {record.env_steps:>11,} | "
        f"{record.env_steps_per_second:8,.0f} steps/s | elapsed {clock_text(elapsed)} | ETA {clock_text(eta)}"
    )


class Display(Sink):
    def __init__(
        self,
        stream: TextIO,
        criteria: StopCriteria,
        *,
        live: bool,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 1.0,
    ) -> None:
        self.stream = stream
        self.criteria = criteria
        self.live = live
        self.clock = clock
        self.tick_s = tick_s
        self.started = clock()
        self.history: list[ProgressRecord] = []
        self.run_iterations = 0
        self.lock = threading.RLock()
        self.painting = False  # the live line exists only between start() and close()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- the status line
    def _eta(self) -> float | None:
        return eta_seconds(self.criteria, self.history, self.run_iterations, self.clock() - self.started)

    def _line(self) -> str:
        return status_text(self.history[-1] if self.history else None, self.clock() - self.started, self._eta())

    def _paint(self) -> None:
        with self.lock:
            if not self.painting:
                return
            self.stream.write(CLEAR_LINE + self._line())
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            self._paint()

    # -- messages printed above the live line
    def message(self, text: str) -> None:
        with self.lock:
            if self.painting:
                self.stream.write(CLEAR_LINE + text + "\n" + self._line())
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    # -- Sink
    def start(self, header: RunHeader) -> None:
        resumed = f", resuming after iteration {header.resumed_from}" if header.resumed_from else ""
        self.message(
            f"{header.job}: recipe {header.recipe} ({header.algorithm}), {header.env_runners} env runners{resumed}"
        )
        self.message(f"stops at: {header.stop}")
        self.started = self.clock()
        if self.live:
            self.painting = True
            self._paint()
            self._ticker = threading.Thread(target=self._tick, name="rljob-display", daemon=True)
            self._ticker.start()

    def record(self, record: ProgressRecord) -> None:
        with self.lock:
            self.history.append(record)
            self.run_iterations += 1
            if self.live:
                self._paint()
            else:
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self, outcome: Outcome) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        with self.lock:
            if self.painting:
                self.stream.write("\n")
                self.painting = False
            self.stream.flush()


class DisplayLogHandler(logging.Handler):
    """Routes log records through the display so they do not tear the live line."""

    def __init__(self, display: Display) -> None:
        super().__init__()
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.message(self.format(record))
        except Exception:
            self.handleError(record)
