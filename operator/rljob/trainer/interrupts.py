"""Graceful stop on SIGINT/SIGTERM: finish the iteration, save a checkpoint, exit 130/143.

The first signal only sets a flag, because interrupting `Algorithm.train()` midway can leave the
learner mid-update; a second Ctrl-C raises KeyboardInterrupt for people who cannot wait, and the
driver still tries to save before it exits.
"""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED

log = logging.getLogger(__name__)


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED

    def install(self) -> StopRequest:
        """Installs the handlers (main thread only; elsewhere this does nothing)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            name = signal.Signals(signum).name
            log.warning("%s: finishing this iteration, then saving a checkpoint (Ctrl-C again to stop now)", name)
